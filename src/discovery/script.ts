/**
 * The scanner: perl from perl-base, run once per re-scan through the spawn
 * helper as `perl FILE pid PID`, `perl FILE pidfile FILE` or `perl FILE
 * cgroup DIR`, so the reporter's
 * loop never waits on /proc of a process stuck in the kernel. It reads only
 * kernel structures, never the files themselves: readlink of /proc/PID/fd/N
 * and /proc/PID/fdinfo/N (no stat of the target, no maps, cmdline or
 * environ, which take the process's mm lock and can wait on a process in D
 * state).
 *
 * A pid file is read here too, not by the reporter: it may be on a watched
 * volume (MariaDB's default is in its data directory).
 *
 * The processes: PID (or the one in the pid file) and its descendants (each thread's `children`
 * (proc(5), CONFIG_PROC_CHILDREN), or the ppid field of every /proc/N/stat
 * where that file is missing), or every pid in cgroup.procs of DIR and the
 * cgroups under it. For each: its mount namespace, that namespace's
 * mountinfo (once per namespace), and each descriptor whose target is a
 * path (not socket:, pipe:, anon_inode:) open with O_WRONLY or O_RDWR: only
 * the first per mount is printed, with the count per mount at the end, so a
 * database with 10 000 files open answers in a few lines.
 *
 * Lines: "proc PID NS", "mi NS MOUNTINFO-LINE", "w NS MNT_ID PID FD FLAGS
 * PATH" (PATH escaped like mountinfo: \012 newline, \134 backslash),
 * "n NS MNT_ID COUNT", then "end".
 */
export const SCAN_SCRIPT = String.raw`
my ($mode, $arg) = @ARGV;
my @pids;
sub slurp { my $f = shift; open(my $h, '<', $f) or return undef; local $/; my $t = <$h>; close $h; return $t }
if ($mode eq 'cgroup') {
  my @dirs = ($arg);
  while (defined(my $d = shift @dirs)) {
    my $procs = slurp("$d/cgroup.procs");
    push @pids, grep { /^\d+$/ } split /\n/, $procs if defined $procs;
    opendir(my $dh, $d) or next;
    push @dirs, map { "$d/$_" } grep { !/^\./ && -d "$d/$_" } readdir $dh;
    closedir $dh;
  }
} else {
  if ($mode eq 'pidfile') {
    my $t = slurp($arg) // '';
    $arg = $t =~ /^\s*(\d+)\s*$/ ? $1 : 0;
  }
  my %seen;
  my @todo = ($arg);
  my $children = -e "/proc/$$/task/$$/children";
  my %kids;
  unless ($children) {
    opendir(my $ph, '/proc');
    for my $p (grep { /^\d+$/ } readdir $ph) {
      my $st = slurp("/proc/$p/stat") // next;
      push @{$kids{$1}}, $p if $st =~ /\)\s+\S+\s+(\d+)/s;
    }
  }
  while (defined(my $p = shift @todo)) {
    next if $seen{$p}++;
    next unless -e "/proc/$p";
    push @pids, $p;
    if ($children) {
      opendir(my $th, "/proc/$p/task") or next;
      for my $t (grep { /^\d+$/ } readdir $th) {
        my $c = slurp("/proc/$p/task/$t/children") // next;
        push @todo, split ' ', $c;
      }
    } else {
      push @todo, @{$kids{$p} // []};
    }
  }
}
my (%mi, %count);
for my $p (@pids) {
  my $ns = readlink("/proc/$p/ns/mnt") // next;
  $ns =~ s/\D//g;
  print "proc $p $ns\n";
  unless (exists $mi{$ns}) {
    my $t = slurp("/proc/$p/mountinfo") // '';
    $mi{$ns} = 1;
    print "mi $ns $_\n" for split /\n/, $t;
  }
  opendir(my $fh, "/proc/$p/fd") or next;
  for my $fd (readdir $fh) {
    next unless $fd =~ /^\d+$/;
    my $target = readlink("/proc/$p/fd/$fd") // next;
    next unless substr($target, 0, 1) eq '/';
    my $info = slurp("/proc/$p/fdinfo/$fd") // next;
    my ($flags) = $info =~ /^flags:\s*([0-7]+)/m;
    my ($mnt) = $info =~ /^mnt_id:\s*(\d+)/m;
    next unless defined $flags && defined $mnt && (oct($flags) & 3);
    next if $count{"$ns $mnt"}++;
    $target =~ s/([\\\n])/sprintf('\\%03o', ord $1)/ge;
    print "w $ns $mnt $p $fd $flags $target\n";
  }
  closedir $fh;
}
print "n $_ $count{$_}\n" for sort keys %count;
print "end\n";
`;

/**
 * Pins a watched volume's probe directory, the root of its mount: `perl FILE
 * DIR`. lstat without following (a directory, not a link), and writable by
 * this user (access(2): a read-only mount says so). Prints "DEV INO": the
 * reporter checks the device is the volume's and pins the directory as it
 * pins a --monitor one. A child does it, as stat on a disk that hangs must
 * not stall the reporter.
 */
export const PIN_SCRIPT = String.raw`
my ($dir) = @ARGV;
my @l = lstat $dir or die "lstat $dir: $!\n";
($l[2] & 0170000) == 0040000 or die "$dir is not a directory\n";
-w $dir or die "$dir is not writable: $!\n";
print "$l[0] $l[1]\n";
`;
