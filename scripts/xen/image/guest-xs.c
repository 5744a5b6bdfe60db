/*
 * xenode-guest-xs: one XenStore request from inside a PV guest, through the guest
 * kernel's xenbus device (/dev/xen/xenbus), i.e. as the unprivileged domain itself.
 * Built statically on the host so the guest needs nothing but busybox.
 *
 *   xenode-guest-xs read PATH          prints the value, or the error name (EACCES ...)
 *   xenode-guest-xs write PATH VALUE   prints OK, or the error name
 *   xenode-guest-xs watch PATH         watches PATH and writes its value, as it is,
 *                                      each time it is written; runs until killed
 *
 * Exits 0 when xenstored answered (even with an error), 1 when the request failed.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
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

int main(int argc, char **argv) {
  static char body[XENSTORE_PAYLOAD_MAX + 1];
  if (argc == 3 && strcmp(argv[1], "watch") == 0) return watch(argv[2]);
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
    fprintf(stderr, "usage: %s read PATH | write PATH VALUE | watch PATH\n", argv[0]);
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
