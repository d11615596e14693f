// Imported first by bin.ts: the bundle evaluates modules in import order, so
// the role's V8 flags are set before any other module's code runs (and gets
// compiled and optimized under the defaults).
import {setV8Flags, v8FlagsFor} from '../src/daemon/v8';

setV8Flags(v8FlagsFor(process.argv.slice(2)));
