/*
 * xenode-guest-xs: one XenStore request from inside a PV guest, through the guest
 * kernel's xenbus device (/dev/xen/xenbus), i.e. as the unprivileged domain itself.
 * Built statically on the host so the guest needs nothing but busybox.
 *
 *   xenode-guest-xs read PATH          prints the value, or the error name (EACCES ...)
 *   xenode-guest-xs write PATH VALUE   prints OK, or the error name
 *   xenode-guest-xs watch PATH         watches PATH and writes its value, as it is,
 *                                      each time it is written; runs until killed
 *   xenode-guest-xs disk-io            serves dom0's disk requests (below); runs until killed
 *
 * Exits 0 when xenstored answered (even with an error), 1 when the request failed.
 *
 * disk-io: dom0 makes the guest's own kernel read and write its disks, through blkfront,
 * with O_DIRECT (the guest's page cache neither answers a read nor holds a write back),
 * so every byte goes through the disk's backend. Below the guest's home:
 *   data/xenode/disk/in/<i>    what to write, as hex, 960 bytes a node (oxenstored takes
 *                              values of up to 2048 bytes from a guest)
 *   data/xenode/disk/request   "<id> read|write <vdev> <offset> <length>", written last
 *   data/xenode/disk/out/<i>   what was read, as hex, 960 bytes a node
 *   data/xenode/disk/result    "<id> ok" once the data is on the disk (a write is
 *                              followed by a flush) or in out/, else "<id> error <why>"
 * One request at a time: dom0 waits for the result before the next.
 */
#define _GNU_SOURCE /* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xen/io/xs_wire.h>

static int full_write(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int full_read(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Sends one request: the device takes a header and its payload in one write. */
static int send_request(int fd, uint32_t type, uint32_t req_id, const char *body, size_t len) {
  static char req[sizeof(struct xsd_sockmsg) + XENSTORE_PAYLOAD_MAX];
  struct xsd_sockmsg msg = { .type = type, .req_id = req_id, .tx_id = 0, .len = (uint32_t)len };
  if (len > XENSTORE_PAYLOAD_MAX) return -1;
  memcpy(req, &msg, sizeof msg);
  memcpy(req + sizeof msg, body, len);
  return full_write(fd, req, sizeof msg + len);
}

/*
 * Watches PATH; on each event reads it and writes the value to stdout. Replies and watch
 * events come through the same device, so a read's reply is told apart by its type.
 */
static int watch(const char *path) {
  static char body[XENSTORE_PAYLOAD_MAX + 1];
  size_t plen = strlen(path) + 1;
  if (plen + 2 > XENSTORE_PAYLOAD_MAX) return 1;
  int fd = open("/dev/xen/xenbus", O_RDWR);
  if (fd < 0) { perror("/dev/xen/xenbus"); return 1; }
  memcpy(body, path, plen);
  memcpy(body + plen, "w", 2); /* the token */
  if (send_request(fd, XS_WATCH, 1, body, plen + 2) < 0) { perror("write"); return 1; }
  for (uint32_t id = 2;; id++) {
    struct xsd_sockmsg m;
    if (full_read(fd, &m, sizeof m) < 0 || m.len > XENSTORE_PAYLOAD_MAX || full_read(fd, body, m.len) < 0) { perror("read"); return 1; }
    if (m.type == XS_WATCH_EVENT) {
      if (send_request(fd, XS_READ, id, path, plen) < 0) { perror("write"); return 1; }
    } else if (m.type == XS_READ && m.len > 0) {
      if (full_write(1, body, m.len) < 0) return 1;
    }
  }
}

/* ---- disk-io ---- */

#define IO_CHUNK 960           /* bytes of data per node: 1920 hex characters */
#define IO_MAX (1024 * 1024)   /* the largest request served */
#define IO_ALIGN 4096          /* O_DIRECT: offset, length and buffer aligned to the block size */

static int req_fd = -1;        /* requests and their replies only: no watch on it */
static char reply[XENSTORE_PAYLOAD_MAX + 1];

/* One request on req_fd; the reply's body is in reply[] (NUL-terminated). Returns its type, or -1. */
static int xs_call(uint32_t type, const char *path, const char *value, size_t vlen) {
  static char body[XENSTORE_PAYLOAD_MAX];
  size_t plen = strlen(path) + 1;
  if (plen + vlen > XENSTORE_PAYLOAD_MAX) return -1;
  memcpy(body, path, plen);
  if (vlen > 0) memcpy(body + plen, value, vlen);
  if (send_request(req_fd, type, 1, body, plen + vlen) < 0) return -1;
  struct xsd_sockmsg m;
  if (full_read(req_fd, &m, sizeof m) < 0 || m.len > XENSTORE_PAYLOAD_MAX || full_read(req_fd, reply, m.len) < 0) return -1;
  reply[m.len] = '\0';
  return (int)m.type;
}

static int xs_put(const char *path, const char *value) {
  return xs_call(XS_WRITE, path, value, strlen(value)) == XS_WRITE ? 0 : -1;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Reads and writes the whole aligned range; 0, or -1 with errno set. */
static int full_io(int fd, int writing, unsigned char *buf, size_t len, off_t at) {
  while (len > 0) {
    ssize_t n = writing ? pwrite(fd, buf, len, at) : pread(fd, buf, len, at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return -1;
    }
    buf += n;
    len -= (size_t)n;
    at += n;
  }
  return 0;
}

/* Does one request; on failure writes why into err. data holds what to write, or gets what was read. */
static int disk_io(const char *vdev, int writing, unsigned long long off, size_t len, unsigned char *data, char *err, size_t errlen) {
  char dev[64];
  snprintf(dev, sizeof dev, "/dev/%s", vdev);
  int fd = -1;
  /* blkfront connects the disk in its own time after the guest boots: give it a while. */
  for (int tries = 0; tries < 300; tries++) {
    fd = open(dev, (writing ? O_RDWR : O_RDONLY) | O_DIRECT);
    if (fd >= 0 || errno != ENOENT) break;
    usleep(100000);
  }
  if (fd < 0) {
    snprintf(err, errlen, "open %s: %s", dev, strerror(errno));
    return -1;
  }
  unsigned long long start = off / IO_ALIGN * IO_ALIGN;
  size_t span = (size_t)((off + len + IO_ALIGN - 1) / IO_ALIGN * IO_ALIGN - start);
  unsigned char *buf;
  if (posix_memalign((void **)&buf, IO_ALIGN, span) != 0) {
    close(fd);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  /* A write of part of a block reads the block first: O_DIRECT moves whole blocks. */
  int rc = full_io(fd, 0, buf, span, (off_t)start);
  if (rc == 0 && writing) {
    memcpy(buf + (off - start), data, len);
    rc = full_io(fd, 1, buf, span, (off_t)start);
    if (rc == 0) rc = fdatasync(fd);
  } else if (rc == 0) {
    memcpy(data, buf + (off - start), len);
  }
  if (rc < 0) snprintf(err, errlen, "%s %s at %llu: %s", writing ? "write" : "read", dev, start, strerror(errno));
  free(buf);
  close(fd);
  return rc;
}

/* Serves one request (the value of data/xenode/disk/request); the answer goes to .../result. */
static void disk_request(const char *line) {
  static unsigned char data[IO_MAX];
  static char hex[2 * IO_CHUNK + 1];
  char id[32], op[8], vdev[32], err[256] = "", path[64], answer[320];
  unsigned long long off;
  size_t len;
  if (sscanf(line, "%31s %7s %31s %llu %zu", id, op, vdev, &off, &len) != 5) return;
  int writing = strcmp(op, "write") == 0;
  if (!writing && strcmp(op, "read") != 0) snprintf(err, sizeof err, "unknown operation %s", op);
  else if (len == 0 || len > IO_MAX) snprintf(err, sizeof err, "length %zu is not in 1..%d", len, IO_MAX);
  else if (strspn(vdev, "abcdefghijklmnopqrstuvwxyz0123456789") != strlen(vdev)) snprintf(err, sizeof err, "bad device name %s", vdev);
  size_t chunks = (len + IO_CHUNK - 1) / IO_CHUNK;
  for (size_t i = 0; writing && err[0] == '\0' && i < chunks; i++) {
    size_t n = i + 1 < chunks ? IO_CHUNK : len - i * IO_CHUNK;
    snprintf(path, sizeof path, "data/xenode/disk/in/%zu", i);
    if (xs_call(XS_READ, path, NULL, 0) != XS_READ || strlen(reply) != 2 * n) {
      snprintf(err, sizeof err, "%s is missing or not %zu hex digits", path, 2 * n);
      break;
    }
    for (size_t j = 0; j < n; j++) {
      int hi = hexval(reply[2 * j]), lo = hexval(reply[2 * j + 1]);
      if (hi < 0 || lo < 0) {
        snprintf(err, sizeof err, "%s is not hex", path);
        break;
      }
      data[i * IO_CHUNK + j] = (unsigned char)(hi << 4 | lo);
    }
  }
  if (err[0] == '\0' && disk_io(vdev, writing, off, len, data, err, sizeof err) == 0 && !writing) {
    for (size_t i = 0; i < chunks; i++) {
      size_t n = i + 1 < chunks ? IO_CHUNK : len - i * IO_CHUNK;
      for (size_t j = 0; j < n; j++) snprintf(hex + 2 * j, 3, "%02x", data[i * IO_CHUNK + j]);
      snprintf(path, sizeof path, "data/xenode/disk/out/%zu", i);
      if (xs_put(path, hex) < 0) {
        snprintf(err, sizeof err, "writing %s failed: %s", path, reply);
        break;
      }
    }
  }
  if (err[0] == '\0') snprintf(answer, sizeof answer, "%s ok", id);
  else snprintf(answer, sizeof answer, "%s error %s", id, err);
  if (xs_put("data/xenode/disk/result", answer) < 0) fprintf(stderr, "xenode-guest-xs: writing the result failed\n");
}

/* Watches data/xenode/disk/request on one connection and serves each new request on another. */
static int disk_service(void) {
  static char body[XENSTORE_PAYLOAD_MAX + 1];
  static char last[64] = "";
  const char *request = "data/xenode/disk/request";
  int wfd = open("/dev/xen/xenbus", O_RDWR);
  req_fd = open("/dev/xen/xenbus", O_RDWR);
  if (wfd < 0 || req_fd < 0) { perror("/dev/xen/xenbus"); return 1; }
  size_t plen = strlen(request) + 1;
  memcpy(body, request, plen);
  memcpy(body + plen, "d", 2); /* the token */
  if (send_request(wfd, XS_WATCH, 1, body, plen + 2) < 0) { perror("write"); return 1; }
  for (;;) {
    struct xsd_sockmsg m;
    if (full_read(wfd, &m, sizeof m) < 0 || m.len > XENSTORE_PAYLOAD_MAX || full_read(wfd, body, m.len) < 0) { perror("read"); return 1; }
    if (m.type != XS_WATCH_EVENT) continue;
    /* The first event comes with the watch itself; a request seen already is not done twice. */
    if (xs_call(XS_READ, request, NULL, 0) != XS_READ) continue;
    char id[64];
    if (sscanf(reply, "%63s", id) != 1 || strcmp(id, last) == 0) continue;
    snprintf(last, sizeof last, "%s", id);
    static char line[XENSTORE_PAYLOAD_MAX + 1];
    snprintf(line, sizeof line, "%s", reply);
    disk_request(line);
  }
}

int main(int argc, char **argv) {
  static char body[XENSTORE_PAYLOAD_MAX + 1];
  if (argc == 3 && strcmp(argv[1], "watch") == 0) return watch(argv[2]);
  if (argc == 2 && strcmp(argv[1], "disk-io") == 0) return disk_service();
  struct xsd_sockmsg msg = { .req_id = 1, .tx_id = 0 };
  size_t len;
  if (argc == 3 && strcmp(argv[1], "read") == 0) {
    msg.type = XS_READ;
    len = strlen(argv[2]) + 1;
    if (len > XENSTORE_PAYLOAD_MAX) return 1;
    memcpy(body, argv[2], len);
  } else if (argc == 4 && strcmp(argv[1], "write") == 0) {
    size_t p = strlen(argv[2]) + 1, v = strlen(argv[3]);
    msg.type = XS_WRITE;
    len = p + v;
    if (len > XENSTORE_PAYLOAD_MAX) return 1;
    memcpy(body, argv[2], p);
    memcpy(body + p, argv[3], v);
  } else {
    fprintf(stderr, "usage: %s read PATH | write PATH VALUE | watch PATH | disk-io\n", argv[0]);
    return 2;
  }
  msg.len = (uint32_t)len;
  int fd = open("/dev/xen/xenbus", O_RDWR);
  if (fd < 0) { perror("/dev/xen/xenbus"); return 1; }
  /* The device takes a request as a header and its payload in one write. */
  static char req[sizeof msg + XENSTORE_PAYLOAD_MAX];
  memcpy(req, &msg, sizeof msg);
  memcpy(req + sizeof msg, body, len);
  if (full_write(fd, req, sizeof msg + len) < 0) { perror("write"); return 1; }
  struct xsd_sockmsg reply;
  if (full_read(fd, &reply, sizeof reply) < 0 || reply.len > XENSTORE_PAYLOAD_MAX ||
      full_read(fd, body, reply.len) < 0) { perror("read"); return 1; }
  body[reply.len] = '\0';
  if (reply.type == XS_ERROR) printf("%s\n", body);
  else if (msg.type == XS_WRITE) printf("OK\n");
  else printf("%s\n", body);
  return 0;
}
