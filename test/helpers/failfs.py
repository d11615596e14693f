#!/usr/bin/python3
"""
failfs: one file served over FUSE, whose reads, writes and fsyncs fail with
EIO on command, so a loop device on it fails I/O as a dying disk does.

    failfs.py BACKING MOUNTPOINT

Serves BACKING as MOUNTPOINT/<basename of BACKING>. SIGUSR1: every read, write
and fsync fails with EIO from then on; SIGUSR2: they work again. Prints
"ready" once mounted. It speaks the kernel's FUSE protocol on /dev/fuse
itself (include/uapi/linux/fuse.h): the machine has no dm-flakey, no
fault injection and no fusepy, and bindfs cannot fail on command. Every
open gets FOPEN_DIRECT_IO, so no page cache answers for the file.
Test helper only: root, one file, one thread.
"""
import ctypes
import errno
import os
import signal
import stat
import struct
import sys

backing_path, mountpoint = sys.argv[1], sys.argv[2]
NAME = os.path.basename(backing_path).encode()
ROOT_ID, FILE_ID = 1, 2
MS_NOSUID, MS_NODEV = 2, 4
FOPEN_DIRECT_IO = 1 << 0
FUSE_BIG_WRITES = 1 << 5
MAX_WRITE = 128 * 1024

failing = False


def set_failing(value):
    def handler(_signum, _frame):
        global failing
        failing = value
    return handler


signal.signal(signal.SIGUSR1, set_failing(True))
signal.signal(signal.SIGUSR2, set_failing(False))

backing = os.open(backing_path, os.O_RDWR)
dev = os.open('/dev/fuse', os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
options = f'fd={dev},rootmode=40000,user_id=0,group_id=0,allow_other'.encode()
if libc.mount(b'failfs', mountpoint.encode(), b'fuse.failfs', MS_NOSUID | MS_NODEV, options) != 0:
    err = ctypes.get_errno()
    raise OSError(err, f'mount {mountpoint}: {os.strerror(err)}')
print('ready', flush=True)


def attr(node):
    """struct fuse_attr"""
    if node == ROOT_ID:
        return struct.pack('<QQQQQQIIIIIIIIII', ROOT_ID, 0, 0, 0, 0, 0, 0, 0, 0, stat.S_IFDIR | 0o755, 2, 0, 0, 0, 4096, 0)
    st = os.fstat(backing)
    return struct.pack('<QQQQQQIIIIIIIIII', FILE_ID, st.st_size, (st.st_size + 511) // 512, int(st.st_atime), int(st.st_mtime), int(st.st_ctime),
                       0, 0, 0, stat.S_IFREG | 0o644, 1, 0, 0, 0, 4096, 0)


def attr_out(node):
    return struct.pack('<QII', 1, 0, 0) + attr(node)


def dirents(offset):
    out = b''
    for index, (ino, kind, name) in enumerate([(ROOT_ID, stat.S_IFDIR, b'.'), (ROOT_ID, stat.S_IFDIR, b'..'), (FILE_ID, stat.S_IFREG, NAME)]):
        if index < offset:
            continue
        entry = struct.pack('<QQII', ino, index + 1, len(name), kind >> 12) + name
        out += entry + b'\0' * (-len(entry) % 8)
    return out


def handle(opcode, node, body):
    """Returns (errno, reply body), or None for requests that get no reply."""
    if opcode == 26:  # INIT
        major, minor, readahead, _flags = struct.unpack_from('<IIII', body)
        return 0, struct.pack('<IIIIHHIIHHIIH22x', 7, min(minor, 31), readahead, FUSE_BIG_WRITES, 16, 12, MAX_WRITE, 1, 0, 0, 0, 0, 0)
    if opcode in (2, 42, 36):  # FORGET, BATCH_FORGET, INTERRUPT
        return None
    if opcode == 1:  # LOOKUP
        name = body.rstrip(b'\0')
        if node != ROOT_ID or name != NAME:
            return errno.ENOENT, b''
        return 0, struct.pack('<QQQQII', FILE_ID, 0, 1, 1, 0, 0) + attr(FILE_ID)
    if opcode in (3, 4):  # GETATTR, SETATTR (a size change is applied; nothing else is kept)
        if opcode == 4 and node == FILE_ID:
            valid, = struct.unpack_from('<I', body)
            if valid & (1 << 3):
                os.ftruncate(backing, struct.unpack_from('<Q', body, 16)[0])
        return 0, attr_out(node)
    if opcode in (14, 27):  # OPEN, OPENDIR
        return 0, struct.pack('<QIi', 0, FOPEN_DIRECT_IO if opcode == 14 else 0, 0)
    if opcode == 28:  # READDIR
        _fh, offset, size = struct.unpack_from('<QQI', body)
        return 0, dirents(offset)[:size]
    if opcode == 15:  # READ
        _fh, offset, size = struct.unpack_from('<QQI', body)
        if failing:
            return errno.EIO, b''
        return 0, os.pread(backing, size, offset)
    if opcode == 16:  # WRITE
        _fh, offset, size = struct.unpack_from('<QQI', body)
        if failing:
            return errno.EIO, b''
        written = os.pwrite(backing, body[40:40 + size], offset)
        return 0, struct.pack('<II', written, 0)
    if opcode == 20:  # FSYNC
        if failing:
            return errno.EIO, b''
        os.fdatasync(backing)
        return 0, b''
    if opcode == 17:  # STATFS
        return 0, struct.pack('<QQQQQIII28x', 0, 0, 0, 0, 0, 4096, 255, 4096)
    if opcode in (18, 25, 29, 34):  # RELEASE, FLUSH, RELEASEDIR, ACCESS
        return 0, b''
    if opcode == 38:  # DESTROY
        sys.exit(0)
    return errno.ENOSYS, b''


while True:
    try:
        request = os.read(dev, MAX_WRITE + 64 * 1024)
    except OSError as error:
        if error.errno == errno.ENODEV:  # unmounted
            break
        if error.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
            continue
        raise
    length, opcode, unique, node = struct.unpack_from('<IIQQ', request)
    try:
        result = handle(opcode, node, request[40:length])
    except OSError as error:
        result = (error.errno or errno.EIO, b'')
    if result is None:
        continue
    err, reply = result
    try:
        os.write(dev, struct.pack('<IiQ', 16 + (0 if err else len(reply)), -err, unique) + (b'' if err else reply))
    except OSError as error:
        if error.errno != errno.ENOENT:  # the request was interrupted meanwhile
            raise
