/**
 * The resident prober: perl from perl-base (Essential on Debian, so on every
 * host), started once per watched path as `perl FILE DIR NAME DEV DIR_INO
 * FILE_INO HEAD CREATE_FLAGS ENOENT EEXIST` and then fed one request a line on
 * stdin, `SEQ OPEN_FLAGS`, answered on stdout. One process opens the probe
 * file, checks what it opened with fstat on the same descriptor, and does the
 * I/O through it, so no check races the I/O: dd can open with O_NOFOLLOW but
 * cannot say which inode on which device it wrote.
 *
 * Every request goes through every check again, as a new process would:
 * - chdir into the watched directory, then stat(".") must be the pinned
 *   device and inode: a directory swapped for a link or another directory
 *   since start-up is refused, and every name below is relative to that
 *   directory, so root never touches anything outside it.
 * - open with O_NOFOLLOW|O_NONBLOCK (a symlink fails with ELOOP, a FIFO opens
 *   without waiting for a writer) and keep the file only if fstat shows a
 *   regular file owned by this user with one link, the inode this prober
 *   created (FILE_INO, then each "created"), on the pinned device. A file
 *   unlinked, renamed away or replaced by rename(2) is not at the name any
 *   more, or not with that inode: it is never written again.
 * - anything else at the name is described (lstat) and removed without
 *   following it: unlink (a link's target is untouched), rmdir, or a directory
 *   that is not empty is renamed aside (never recursed into as root). Then the
 *   file is created with O_CREAT|O_EXCL (never follows, fails if anything got
 *   there first) and checked the same way.
 * - write one 4 KiB block and read it back. With O_DIRECT the buffer must be
 *   aligned: the block is placed at a 4096-byte boundary inside a larger
 *   string, made once and rewritten in place.
 * - after it, ask the kernel whether the mount table changed since the
 *   previous answer (a zero-timeout select on /proc/self/mountinfo, which
 *   marks a mount or unmount in the namespace until it is asked, once): if so
 *   the answer says "mounts", and the
 *   reporter reads the table again. Otherwise it need not: the directory pin
 *   above already refuses a path that no longer leads to the pinned directory.
 * - then close the file and chdir to "/": between requests the prober holds
 *   nothing on the volume. A file open for writing makes `mount -o
 *   remount,ro` fail with EBUSY, and a working directory makes `umount` fail:
 *   the operator must still be able to do both while the reporter runs.
 *
 * Flags and errno numbers come from Node's constants (they differ between
 * architectures); loading no module (Fcntl, Errno, strict) halves perl's
 * start-up. Answers, one fact a line: "found|stale UID LINKS INODE KIND",
 * "missing", "moved NAME", "created INODE", "mounts", then "ok" or "fail STAGE CODE TEXT"
 * (CODE an errno number, or a word for the probe's own checks), which ends the
 * answer. End of stdin (the reporter gone) ends the prober.
 */
export const PROBE_SCRIPT = String.raw`
my ($dir, $name, $dev, $dino, $fino, $head, $create, $ENOENT, $EEXIST) = @ARGV;
$| = 1;
# Numbers, not strings: | on two strings is perl's string bitwise or.
$create += 0;
sub fail { die "fail $_[0] $_[1] $_[2]\n" }
sub sysfail { fail($_[0], 0 + $!, "$!") }
sub type { ($_[0] & 0170000) == $_[1] }
sub kind {
  my $m = shift;
  return type($m, 0100000) ? 'regular file' : type($m, 0120000) ? 'symlink' : type($m, 0040000) ? 'directory'
    : type($m, 0010000) ? 'fifo' : type($m, 0140000) ? 'socket' : type($m, 0020000) ? 'character device'
    : type($m, 0060000) ? 'block device' : 'file of unknown type';
}
sub aligned { my $r = shift; my $a = unpack('J', pack('p', $$r)); return (4096 - $a % 4096) % 4096 }
sub ours { my @s = @_; return type($s[2], 0100000) && $s[4] == $> && $s[3] == 1 }
# Writing one byte gives a string a buffer of its own (not shared copy-on-write), so its address holds.
my $out = "\0" x 8192;
vec($out, 0, 8) = 0;
my $off = aligned(\$out);
my $in = "\0" x 8192;
vec($in, 0, 8) = 0;
my $roff = aligned(\$in);
# Pollable (proc(5)): after a mount or unmount in this namespace, select() marks it exceptional, once per change.
open(my $mounts, '<', '/proc/self/mountinfo') or undef $mounts;
sub remounted {
  $mounts or return 1;
  my $e = '';
  vec($e, fileno($mounts), 1) = 1;
  return select(undef, undef, $e, 0) > 0;
}
sub probe {
  my ($seq, $flags) = @_;
  chdir $dir or sysfail('chdir');
  my @d = stat '.' or sysfail('stat');
  ($d[0] == $dev && $d[1] == $dino) or fail('pin', 'EREPLACED', "the directory is now device $d[0] inode $d[1], not the pinned device $dev inode $dino");
  my $fh;
  if ($fino ne '0') {
    if (sysopen($fh, $name, $flags)) {
      my @s = stat $fh;
      unless (ours(@s) && $s[0] == $dev && $s[1] == $fino) { close $fh; undef $fh }
    } else {
      # Our own file that cannot be opened is an I/O error (EROFS, EIO), not a plant: report it, touch nothing.
      my $err = $! + 0;
      my @l = lstat $name;
      if (!@l) { $! == $ENOENT ? print "missing\n" : sysfail('lstat') }
      elsif (ours(@l) && $l[0] == $dev && $l[1] == $fino) { $! = $err; sysfail('open') }
      undef $fh;
    }
  }
  unless ($fh) {
    for my $try (1 .. 3) {
      my @l = lstat $name;
      if (@l) {
        print +($fino eq '0' && ours(@l) ? 'stale' : 'found'), " $l[4] $l[3] $l[1] ", kind($l[2]), "\n";
        if (type($l[2], 0040000)) {
          rmdir $name or (rename($name, "$name.planted.$$") and print "moved $name.planted.$$\n") or sysfail('rmdir');
        } else {
          unlink $name or $! == $ENOENT or sysfail('unlink');
        }
      } elsif ($! != $ENOENT) {
        sysfail('lstat');
      }
      last if sysopen($fh, $name, $flags | $create, 0600);
      $! == $EEXIST or sysfail('create');
      undef $fh;
    }
    $fh or fail('create', 'EEXIST', 'something was planted at the probe name again at once, 3 times');
    my @s = stat $fh;
    ours(@s) or fail('create', 'EPLANTED', 'the file just created is not a regular file of this user with one link');
    $s[0] == $dev or fail('pin', 'EXDEV', "the probe file is on device $s[0], not the pinned device $dev");
    $fino = $s[1];
    print "created $s[1]\n";
  }
  my $line = "$head seq=$seq";
  substr($out, $off, 4096) = $line . ('.' x (4095 - length $line)) . "\n";
  aligned(\$out) == $off or fail('write', 'EALIGN', 'the buffer moved');
  # A descriptor opened just now is at offset 0.
  my $n = syswrite($fh, $out, 4096, $off);
  defined $n or sysfail('write');
  $n == 4096 or fail('write', 'ESHORT', "wrote $n of 4096 bytes");
  sysseek($fh, 0, 0) or sysfail('seek');
  $n = sysread($fh, $in, 4096, $roff);
  defined $n or sysfail('read');
  aligned(\$in) == $roff or fail('read', 'EALIGN', 'the buffer moved');
  substr($in, $roff, 4096) eq substr($out, $off, 4096) or fail('read', 'EMISMATCH', 'the block read back is not the block written');
}
while (my $request = <STDIN>) {
  my ($seq, $flags) = split ' ', $request;
  # The file is closed as probe() returns or dies (its handle goes out of scope).
  my $end = eval { probe($seq, $flags + 0); "ok\n" } // $@;
  # Any change since the previous answer: before this probe (since the reporter last heard) or while its I/O ran.
  print "mounts\n" if remounted();
  # A perl error of its own (not a fail above) still ends the answer, so the reporter is not left waiting for the deadline.
  $end =~ /^fail / or $end eq "ok\n" or $end = 'fail probe EPERL ' . ($end =~ s/\s+/ /gr) . "\n";
  # Nothing stays open or current on the volume once the answer is out.
  chdir '/';
  print $end;
}
`;
