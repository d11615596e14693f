/**
 * The socket cutter: perl from perl-base (Essential on Debian), run as
 * `perl -e SCRIPT -- NR_MLOCKALL NR_CLOCK_GETTIME ENOENT ESTALE EAGAIN
 * EADDRINUSE O_NONBLOCK HANDOVER`. Syscall, errno and flag numbers come from
 * Node (they differ between architectures); everything else is a literal that
 * x86_64 and aarch64 share. It loads no module (no `use`, no `require`), so
 * nothing is read from disk after start-up.
 *
 * Start-up, before `ready`:
 * - mlockall(MCL_CURRENT|MCL_FUTURE): perl, its libraries and its heap stay
 *   resident; a page evicted during an outage would be read back from the
 *   root disk, which may be the one that hangs.
 * - holds an abstract unix socket named HANDOVER (per network namespace, no
 *   file) for life, when it is free. A predecessor that still holds it (its
 *   monitor died, its deadlines were that monitor's) is asked to exit by a
 *   connect at the `takeover` command, which the monitor sends once it has
 *   handed this cutter every deadline: an old deadline never cuts a port a
 *   new monitor re-armed, and no deadline goes uncut in between. Only a
 *   connect from its own user makes a cutter exit, and a name another user
 *   holds is reported (`error handover: ...`) and not waited for.
 * - warms up: a real RTM_GETADDR dump, and a TCP connection to itself on
 *   127.0.0.1 (and ::1 when IPv6 is there) whose accepted end it finds in a
 *   real inet_diag dump of each family and destroys with SOCK_DESTROY. The
 *   first sock_diag request of a family may make the kernel load inet_diag
 *   and tcp_diag (request_module execs modprobe from disk); after the
 *   warm-up every kernel and user path a cut takes has run once.
 * - prints `ready destroy=ok`, or `ready destroy=unsupported TEXT` (a kernel
 *   without CONFIG_INET_DIAG_DESTROY answers EOPNOTSUPP; without
 *   CAP_NET_ADMIN, EPERM).
 *
 * Then it only reads commands from stdin and cuts at each deadline by itself:
 * - `in PORT NS` / `out PORT NS`: at CLOCK_MONOTONIC nanoseconds NS (0: now),
 *   destroy every TCP socket holding a connection whose local (in) or remote
 *   (out) port is PORT and whose peer is neither loopback nor an address of
 *   this host (IPv4, IPv6, IPv4-mapped IPv6). A later command for the same
 *   key replaces the earlier one; commands already written when a deadline
 *   comes are read before it is acted on.
 * - `clear in|out PORT`: no deadline. `quit`: exit at once. `takeover`: make
 *   the predecessor holding HANDOVER exit (see above).
 * - EOF (its monitor died): every pending deadline still cuts; it exits once
 *   none is left.
 * Output, one line each: `cut in|out PORT N` (N sockets destroyed),
 * `error TEXT`. Stdout is non-blocking and SIGPIPE ignored: with nobody
 * reading, lines are dropped and the cutter never waits on a write.
 *
 * Due keys are batched: one dump per family (filtered in the kernel by
 * inet_diag bytecode when at most 32 ports are due), then destroy requests 64
 * to a datagram (netlink handles each message of a datagram and acks each).
 * Each dump walks the kernel's whole established-socket hash, whatever the
 * filter: that walk, not the destroys, is most of a single port's cut (bench
 * step in bench/cutter.ts). A
 * destroy answered ENOENT or ESTALE found its socket gone already (closed
 * since the dump, or the 4-tuple reused: the cookie no longer matches).
 * Deadline bookkeeping is a hash and an earliest-deadline bound that may be
 * early, never late: re-arms cost a hash store, and a scan of all keys
 * happens only when the bound comes due.
 */
export const CUTTER_SCRIPT = String.raw`
my ($NR_MLOCKALL, $NR_CLOCK_GETTIME, $ENOENT, $ESTALE, $EAGAIN, $EADDRINUSE, $O_NONBLOCK) = map { 0 + $_ } @ARGV[0 .. 6];
my $HANDOVER = $ARGV[7];
my ($AF_UNIX, $AF_INET, $AF_INET6, $AF_NETLINK, $SOCK_STREAM, $SOCK_RAW, $IPPROTO_TCP) = (1, 2, 10, 16, 1, 3, 6);
my ($NETLINK_ROUTE, $NETLINK_SOCK_DIAG, $RTM_GETADDR, $SOCK_DIAG_BY_FAMILY, $SOCK_DESTROY) = (0, 4, 22, 20, 21);
my ($NLMSG_ERROR, $NLMSG_DONE, $DUMP, $ACK, $MSG_DONTWAIT) = (2, 3, 0x301, 0x5, 0x40);
my ($IFA_ADDRESS, $IFA_LOCAL, $CLOCK_MONOTONIC) = (1, 2, 1);
# TCP states that hold a connection: established, syn-sent, syn-recv, fin-wait-1/2, close-wait, last-ack, closing.
my $HELD = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);
my $KERNEL = pack('S S L L', $AF_NETLINK, 0, 0, 0);
my $LOOPBACK6 = ("\0" x 15) . "\1";
my $MAPPED = ("\0" x 10) . "\xff\xff";
$SIG{PIPE} = 'IGNORE';

my $out = '';
sub emit { $out .= "$_[0]\n" }
# Writes of at most PIPE_BUF bytes to a pipe are whole or nothing: lines are never torn.
sub flush {
  while (length $out) {
    my $end = length($out) <= 4096 ? length($out) : rindex($out, "\n", 4095) + 1;
    $end = length($out) if $end <= 0;
    my $n = syswrite(STDOUT, $out, $end);
    if (!defined $n || $n < $end) { $out = ''; return }
    substr($out, 0, $n) = '';
  }
}
sub fatal { emit("error $_[0]"); flush(); exit 1 }
sub errtext { local $! = $_[0]; return "$!" }

my $fl = fcntl(STDOUT, 3, 0);
fcntl(STDOUT, 4, (0 + $fl) | $O_NONBLOCK) if defined $fl;
syscall($NR_MLOCKALL, 3) == 0 or emit("error mlockall: $!");
my $ts = pack('q q', 0, 0);
sub now {
  syscall($NR_CLOCK_GETTIME, $CLOCK_MONOTONIC, $ts) == 0 or fatal("clock_gettime: $!");
  my ($s, $n) = unpack('q q', $ts);
  return $s * 1000000000 + $n;
}
now();

# The handover name: held for life; a connect from a process of our own user is a successor
# asking us to exit. Anyone can connect to an abstract name, so the peer's uid is checked
# (SO_PEERCRED), and a name another user holds is not waited for: no handover then.
my ($SOL_SOCKET, $SO_PEERCRED) = (1, 17);
sub peer_uid { my $cred = getsockopt($_[0], $SOL_SOCKET, $SO_PEERCRED); return defined $cred ? (unpack('l L', $cred))[1] : -1 }
my $successor;
my $HANDOVER_NAME = pack('S', $AF_UNIX) . "\0$HANDOVER";
# At start-up: the name if it is free. Taken from a predecessor only at the takeover command.
sub hold_name {
  socket($successor, $AF_UNIX, $SOCK_STREAM, 0) or fatal("handover socket: $!");
  if (bind($successor, $HANDOVER_NAME) && listen($successor, 8)) { return 1 }
  $! == $EADDRINUSE or fatal("handover bind: $!");
  close $successor;
  undef $successor;
  return 0;
}
hold_name() if length $HANDOVER;
sub take_over {
  return if $successor || !length $HANDOVER;
  my $name = $HANDOVER_NAME;
  socket($successor, $AF_UNIX, $SOCK_STREAM, 0) or fatal("handover socket: $!");
  my ($tries, $bound, $knocked) = (0, 0, 0);
  until ($bound = bind($successor, $name)) {
    $! == $EADDRINUSE or fatal("handover bind: $!");
    # One knock is enough; non-blocking, as a holder that never accepts fills its backlog.
    if (!$knocked && socket(my $knock, $AF_UNIX, $SOCK_STREAM, 0)) {
      my $flags = fcntl($knock, 3, 0);
      fcntl($knock, 4, (0 + $flags) | $O_NONBLOCK) if defined $flags;
      if (connect($knock, $name)) {
        my $holder = peer_uid($knock);
        if ($holder != $>) { emit("error handover: $HANDOVER is held by uid $holder, not by a cutter: started without handover"); last }
        $knocked = 1;
      }
      close $knock;
    }
    if (++$tries > 300) { emit("error handover: the previous cutter holding $HANDOVER does not exit: started without handover"); last }
    select(undef, undef, undef, 0.01);
  }
  undef $successor unless $bound && listen($successor, 8);
}

socket(my $diag, $AF_NETLINK, $SOCK_RAW, $NETLINK_SOCK_DIAG) or fatal("socket NETLINK_SOCK_DIAG: $!");
socket(my $route, $AF_NETLINK, $SOCK_RAW, $NETLINK_ROUTE) or fatal("socket NETLINK_ROUTE: $!");
my $seq = 0;

# Kernel requests are handled inside send(): the answer is queued when it returns, or the
# next part of a dump is made inside recv(). A second chance after a second covers the rest.
sub nlrecv {
  my $sock = shift;
  for my $try (0, 1) {
    my $buf = '';
    return $buf if defined recv($sock, $buf, 65536, $MSG_DONTWAIT);
    return undef unless $! == $EAGAIN && $try == 0;
    my $rin = '';
    vec($rin, fileno($sock), 1) = 1;
    select($rin, undef, undef, 1);
  }
  return undef;
}
sub messages {
  my $buf = shift;
  my @m;
  my $off = 0;
  while ($off + 16 <= length $buf) {
    my ($len, $type, $flags, $s) = unpack('L S S L', substr($buf, $off, 16));
    last if $len < 16 || $off + $len > length $buf;
    push @m, [$type, $s, substr($buf, $off + 16, $len - 16)];
    $off += ($len + 3) & ~3;
  }
  return @m;
}
# Every payload of one dump, or an error text.
sub dump_all {
  my ($sock, $type, $body) = @_;
  my $s = ++$seq;
  send($sock, pack('L S S L L', 16 + length $body, $type, $DUMP, $s, 0) . $body, 0, $KERNEL) or return "send: $!";
  my @items;
  for (;;) {
    my $buf = nlrecv($sock);
    defined $buf or return "recv: $!";
    for my $m (messages($buf)) {
      my ($t, $ms, $p) = @$m;
      next unless $ms == $s;
      if ($t == $NLMSG_DONE || $t == $NLMSG_ERROR) {
        my $err = unpack('l', $p . "\0\0\0\0");
        return $err < 0 ? errtext(-$err) : \@items;
      }
      push @items, $p;
    }
  }
}

my %local;
# This host's addresses as raw bytes, IPv4 in 4 (also when the kernel shows it IPv4-mapped).
sub fetch_local {
  my $items = dump_all($route, $RTM_GETADDR, pack('C C C C L', 0, 0, 0, 0, 0));
  return $items unless ref $items;
  my %found;
  for my $p (@$items) {
    my $family = unpack('C', $p);
    my ($address, $own);
    my $off = 8;
    while ($off + 4 <= length $p) {
      my ($len, $type) = unpack('S S', substr($p, $off, 4));
      last if $len < 4;
      $address = substr($p, $off + 4, $len - 4) if $type == $IFA_ADDRESS;
      $own = substr($p, $off + 4, $len - 4) if $type == $IFA_LOCAL;
      $off += ($len + 3) & ~3;
    }
    # IFA_LOCAL is this host's end of a point-to-point link, whose IFA_ADDRESS is the peer.
    my $mine = defined $own ? $own : $address;
    $found{$mine} = 1 if defined $mine && length $mine == ($family == $AF_INET ? 4 : 16);
  }
  %local = %found;
  return undef;
}
sub remote_peer {
  my ($family, $dst) = @_;
  my $peer = $family == $AF_INET ? substr($dst, 0, 4) : substr($dst, 0, 12) eq $MAPPED ? substr($dst, 12, 4) : $dst;
  return 0 if length $peer == 4 ? ord($peer) == 127 : $peer eq $LOOPBACK6;
  return !exists $local{$peer};
}

# Destroys [tag, family, sockid] each; returns ({tag => destroyed}, {error text => sockets}).
sub destroy {
  my $list = shift;
  my (%done, %failed);
  for (my $i = 0; $i < @$list; $i += 64) {
    my $last = $i + 63 < $#$list ? $i + 63 : $#$list;
    my ($msg, %tag) = ('');
    for my $hit (@$list[$i .. $last]) {
      my $s = ++$seq;
      $tag{$s} = $hit->[0];
      $msg .= pack('L S S L L C C C C L', 72, $SOCK_DESTROY, $ACK, $s, 0, $hit->[1], $IPPROTO_TCP, 0, 0, 0) . $hit->[2];
    }
    unless (send($diag, $msg, 0, $KERNEL)) { $failed{"destroy: send: $!"} += keys %tag; next }
    while (%tag) {
      my $buf = nlrecv($diag);
      unless (defined $buf) { $failed{"destroy: no answer: $!"} += keys %tag; last }
      for my $m (messages($buf)) {
        my ($t, $s, $p) = @$m;
        next unless $t == $NLMSG_ERROR && exists $tag{$s};
        my $tag = delete $tag{$s};
        my $err = -unpack('l', $p);
        if ($err == 0) { $done{$tag}++ }
        elsif ($err != $ENOENT && $err != $ESTALE) { $failed{'destroy: ' . errtext($err)}++ }
      }
    }
  }
  return (\%done, \%failed);
}
# A kernel-side filter (inet_diag bytecode, as ss builds it) passing sockets whose local port
# is in @$in or remote port in @$out. Port P is "P <= port <= P" (S_EQ is newer than 4.x
# kernels); alternatives are joined by jumps, as the kernel's audit only accepts jump
# targets on the path of "yes" branches.
my ($BC_JMP, $BC_S_GE, $BC_S_LE, $BC_D_GE, $BC_D_LE, $INET_DIAG_REQ_BYTECODE) = (1, 2, 3, 4, 5, 1);
sub port_filter {
  my ($in, $out) = @_;
  my @alts = ((map { [$BC_S_GE, $BC_S_LE, $_] } @$in), (map { [$BC_D_GE, $BC_D_LE, $_] } @$out));
  my $len = 20 * @alts - 4;
  my $bc = '';
  for my $i (0 .. $#alts) {
    my ($ge, $le, $port) = @{$alts[$i]};
    my $left = $len - 20 * $i;
    my $last = $i == $#alts;
    # A failed test goes to the next alternative, or past the end (rejected) from the last.
    $bc .= pack('C C S C C S', $ge, 8, $last ? $left + 4 : 20, 0, 0, $port);
    $bc .= pack('C C S C C S', $le, 8, $last ? $left - 8 + 4 : 12, 0, 0, $port);
    $bc .= pack('C C S', $BC_JMP, 4, $left - 16) unless $last;
  }
  return pack('S S', 4 + length $bc, $INET_DIAG_REQ_BYTECODE) . $bc;
}
# One dump per family (filtered in the kernel when few ports are due: the filter costs it a
# test per port and socket); every socket $match tags is destroyed.
sub sweep {
  my ($in, $out, $match) = @_;
  my $filter = @$in + @$out <= 32 ? port_filter($in, $out) : '';
  my (@hits, %failed);
  for my $family ($AF_INET, $AF_INET6) {
    my $items = dump_all($diag, $SOCK_DIAG_BY_FAMILY, pack('C C C C L', $family, $IPPROTO_TCP, 0, 0, $HELD) . ("\0" x 48) . $filter);
    unless (ref $items) { $failed{($family == $AF_INET ? 'IPv4' : 'IPv6') . " dump: $items"}++; next }
    for my $p (@$items) {
      next if length $p < 52;
      my ($fam, $sport, $dport, $dst) = unpack('C x3 n n x16 a16', $p);
      my $tag = $match->($fam, $sport, $dport, $dst);
      push @hits, [$tag, $fam, substr($p, 4, 48)] if defined $tag;
    }
  }
  my ($done, $more) = destroy(\@hits);
  $failed{$_} += $more->{$_} for keys %$more;
  return ($done, \%failed);
}

sub cut {
  my (%in, %out);
  for (@_) {
    my ($kind, $port) = split / /;
    ($kind eq 'in' ? \%in : \%out)->{$port} = 1;
  }
  my $e = fetch_local();
  emit("error addresses: $e") if defined $e;
  my ($done, $failed) = sweep([keys %in], [keys %out], sub {
    my ($family, $sport, $dport, $dst) = @_;
    my $tag = exists $in{$sport} ? "in $sport" : exists $out{$dport} ? "out $dport" : undef;
    return defined $tag && remote_peer($family, $dst) ? $tag : undef;
  });
  emit("cut $_ " . ($done->{$_} || 0)) for @_;
  emit("error $_ ($failed->{$_} sockets)") for sort keys %$failed;
  flush();
}

sub warm_up {
  my $e = fetch_local();
  return "addresses: $e" if defined $e;
  my @pairs;
  for my $end ([$AF_INET, pack('S n a4 x8', $AF_INET, 0, "\x7f\0\0\1")], [$AF_INET6, pack('S n N a16 L', $AF_INET6, 0, 0, $LOOPBACK6, 0)]) {
    my ($family, $address) = @$end;
    socket(my $l, $family, $SOCK_STREAM, $IPPROTO_TCP) or next;
    # No ::1 (IPv6 disabled): IPv4 alone.
    bind($l, $address) && listen($l, 1) or next;
    socket(my $c, $family, $SOCK_STREAM, $IPPROTO_TCP) or return "socket: $!";
    connect($c, getsockname($l)) or return "connect to itself: $!";
    accept(my $peer, $l) or return "accept: $!";
    push @pairs, [unpack('x2 n', getsockname($l)), unpack('x2 n', getsockname($c)), $l, $c, $peer];
  }
  @pairs or return 'no loopback TCP';
  my ($done, $failed) = sweep([map { $_->[0] } @pairs], [], sub {
    my ($family, $sport, $dport) = @_;
    for (@pairs) { return 'warm' if $sport == $_->[0] && $dport == $_->[1] }
    return undef;
  });
  my @errors = sort keys %$failed;
  return $errors[0] =~ s/^destroy: //r if @errors;
  return ($done->{warm} || 0) == @pairs ? undef : 'its own connection was not in the dump';
}
my $w = warm_up();
emit(defined $w ? "ready destroy=unsupported $w" : 'ready destroy=ok');
flush();

my %due;
my $next;
my ($eof, $inbuf) = (0, '');
sub command {
  my $l = shift;
  if ($l =~ /^(in|out) (\d{1,5}) (\d{1,19})$/) {
    my $ns = 0 + $3;
    $due{"$1 $2"} = $ns;
    $next = $ns if !defined $next || $ns < $next;
  } elsif ($l =~ /^clear (in|out) (\d{1,5})$/) {
    delete $due{"$1 $2"};
  } elsif ($l eq 'quit') {
    exit 0;
  } elsif ($l eq 'takeover') {
    take_over();
    flush();
  } elsif ($l ne '') {
    emit("error unknown command: " . substr($l, 0, 100));
  }
}
sub read_commands {
  my $timeout = shift;
  return if $eof;
  my $rin = '';
  vec($rin, fileno(STDIN), 1) = 1;
  while (select(my $rout = $rin, undef, undef, $timeout) > 0) {
    my $n = sysread(STDIN, $inbuf, 65536, length $inbuf);
    next if !defined $n && $! == $EAGAIN;
    if (!$n) { $eof = 1; last }
    my @lines = split /\n/, $inbuf, -1;
    # Node writes whole lines: a line this long is not a command.
    $inbuf = pop @lines;
    $inbuf = '' if length $inbuf > 65536;
    command($_) for @lines;
    $timeout = 0;
  }
}

for (;;) {
  my $now = now();
  if (defined $next && $now >= $next) {
    read_commands(0);
    my (@keys, $min);
    while (my ($key, $ns) = each %due) {
      if ($ns <= $now) { push @keys, $key }
      elsif (!defined $min || $ns < $min) { $min = $ns }
    }
    delete @due{@keys};
    $next = $min;
    cut(@keys) if @keys;
    next;
  }
  exit 0 if $eof && !%due;
  my $rin = '';
  vec($rin, fileno(STDIN), 1) = 1 unless $eof;
  vec($rin, fileno($successor), 1) = 1 if $successor;
  my $n = select(my $rout = $rin, undef, undef, defined $next ? ($next - $now) / 1e9 : undef);
  next if $n <= 0;
  if ($successor && vec($rout, fileno($successor), 1) && accept(my $peer, $successor)) {
    # A successor: its monitor holds the deadlines now.
    exit 0 if peer_uid($peer) == $>;
    close $peer;
  }
  read_commands(0) if vec($rout, fileno(STDIN), 1);
}
`;
