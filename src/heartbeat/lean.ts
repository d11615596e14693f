import * as t from 'typanion';

/**
 * typanion validators for the monitor's hot path (1000 heartbeats a second).
 * typanion's own isObject and cascade build a state object, a key path and a
 * coercion closure for every property of every message, even when nothing is
 * wrong: most of the monitor's CPU and garbage went there. These keep
 * typanion's rules and error format ("<path>: Expected ...") but allocate
 * nothing on the valid path, and build nested states only while errors are
 * being collected.
 */

type State = t.ValidationState | undefined;

/** Records an error as typanion does; always false. */
export function fail(state: State, message: string): false {
  state?.errors?.push(`${state.p ?? '.'}: ${message}`);
  return false;
}

function printable(value: unknown): string {
  return value === undefined ? 'undefined' : JSON.stringify(value)?.slice(0, 80) ?? String(value);
}

/** A number for which `ok` holds. */
export function isNumberWhere(expected: string, ok: (n: number) => boolean): t.StrictValidator<unknown, number> {
  return t.makeValidator<unknown, number>({
    test: (value, state): value is number => (typeof value === 'number' && ok(value)) || fail(state, `Expected ${expected} (got ${printable(value)})`),
  });
}

/** A string for which `ok` holds. */
export function isStringWhere(expected: string, ok: (s: string) => boolean): t.StrictValidator<unknown, string> {
  return t.makeValidator<unknown, string>({
    test: (value, state): value is string => (typeof value === 'string' && ok(value)) || fail(state, `Expected ${expected} (got ${printable(value)})`),
  });
}

function at(state: State, key: string | number): State {
  if (state?.errors === undefined)
    return undefined;
  return {...state, p: typeof key === 'number' ? `${state.p ?? '.'}[${key}]` : `${state.p ?? ''}.${key}`};
}

/** An array of `min` to `max` items, each passing `item`; with `distinct`, no two equal (===). */
export function isBoundedArray<T>(item: t.StrictValidator<unknown, T>, {min, max, distinct = false}: {min: number, max: number, distinct?: boolean}): t.StrictValidator<unknown, Array<T>> {
  return t.makeValidator<unknown, Array<T>>({
    test: (value, state): value is Array<T> => {
      if (!Array.isArray(value))
        return fail(state, `Expected an array (got ${printable(value)})`);
      if (value.length < min || value.length > max)
        return fail(state, `Expected between ${min} and ${max} elements (got ${value.length})`);
      let valid = true;
      for (let i = 0; i < value.length && (valid || state?.errors !== undefined); i++) {
        if (!item(value[i], at(state, i)))
          valid = false;
        else if (distinct && value.indexOf(value[i]) !== i)
          valid = fail(at(state, i), `Expected to be unique (got a duplicate of ${printable(value[i])})`);
      }
      return valid;
    },
  });
}

/** An array of `min` to `max` distinct items, each passing `item`. */
export function isDistinctArray<T>(item: t.StrictValidator<unknown, T>, bounds: {min: number, max: number}): t.StrictValidator<unknown, Array<T>> {
  return isBoundedArray(item, {...bounds, distinct: true});
}

type Shape = Record<string, t.StrictValidator<unknown, unknown>>;
/** Keys whose validator accepts undefined (t.isOptional): optional in the type, as a missing key passes undefined. */
type OptionalKeys<S extends Shape> = {[K in keyof S]: undefined extends t.InferType<S[K]> ? K : never}[keyof S];
type Flatten<T> = {[K in keyof T]: T[K]};
type Inferred<S extends Shape> = Flatten<{[K in Exclude<keyof S, OptionalKeys<S>>]: t.InferType<S[K]>} & {[K in OptionalKeys<S>]?: t.InferType<S[K]>}>;

/** An object with exactly the shape's properties, as typanion's isObject without `extra`; a missing key is checked as undefined. */
export function isExactObject<S extends Shape>(shape: S): t.StrictValidator<unknown, Inferred<S>> {
  const keys = Object.keys(shape);
  return t.makeValidator<unknown, Inferred<S>>({
    test: (value, state): value is Inferred<S> => {
      if (typeof value !== 'object' || value === null || Array.isArray(value))
        return fail(state, `Expected an object (got ${printable(value)})`);
      const record = value as Record<string, unknown>;
      let valid = true;
      for (const key of keys) {
        if (!shape[key]!(Object.prototype.hasOwnProperty.call(record, key) ? record[key] : undefined, at(state, key))) {
          valid = false;
          if (state?.errors === undefined)
            return false;
        }
      }
      for (const key in record) {
        if (Object.prototype.hasOwnProperty.call(record, key) && !Object.prototype.hasOwnProperty.call(shape, key)) {
          valid = fail(at(state, key), `Extraneous property (got ${printable(record[key])})`);
          if (state?.errors === undefined)
            return false;
        }
      }
      return valid;
    },
  });
}
