/*
 * xenode-guest-relay: lends dom0's tests the guest's own XenStore connections. It
 * multiplexes up to RELAY_CHANNELS opens of /dev/xen/xenbus (each with its own watches
 * and transactions, as the kernel keeps them per open file) over the guest console,
 * hvc0, which dom0 reaches through the console's pty (/local/domain/<id>/console/tty).
 * Built statically on the host so the guest needs nothing but busybox.
 *
 * Every frame is one line, so kernel messages or other output between frames are
 * ignored; a frame that was cut into is caught by its checksum:
 *
 *   ~<dir><chan:2 hex><op><payload: hex>:<fnv1a-32 of everything after '~', 8 hex>\n
 *
 * dir is 'H' from dom0 (host) and 'G' from the guest. Ops from dom0: P ping, O open
 * channel, D bytes for the channel, C close it. Ops from the guest: P pong, O opened
 * (payload: empty, or an errno name), D bytes xenstored sent, C closed, E a bad frame
 * (payload: the hex of the line's start). The guest's xenbus device takes one whole
 * message per write(), so D payloads are split into messages here, not by dom0. The
 * device answers some requests by failing the write() (XS_WATCH past the watch quota:
 * E2BIG); the relay turns that into the XS_ERROR reply xenstored itself would send.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <xen/io/xs_wire.h>

#define RELAY_CHANNELS 16
#define MAX_MSG (sizeof(struct xsd_sockmsg) + XENSTORE_PAYLOAD_MAX)
#define LINE_MAX_HEX (2 * MAX_MSG + 64)

static int console = -1;

struct channel {
  int fd;                  /* -1 when closed */
  unsigned char in[MAX_MSG]; /* bytes from dom0, not yet a whole message */
  size_t in_len;
};
static struct channel channels[RELAY_CHANNELS];

static uint32_t fnv1a(const char *s, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) { struct pollfd pf = { fd, POLLOUT, 0 }; poll(&pf, 1, 100); continue; }
    if (w <= 0) return;
    p += w;
    n -= (size_t)w;
  }
}

/* Sends one frame; data is hex-encoded. */
static void send_frame(int chan, char op, const void *data, size_t len) {
  static char line[LINE_MAX_HEX];
  static const char hex[] = "0123456789abcdef";
  const unsigned char *d = data;
  size_t n = 0;
  line[n++] = '~';
  n += (size_t)sprintf(line + n, "G%02x%c", chan, op);
  for (size_t i = 0; i < len; i++) {
    line[n++] = hex[d[i] >> 4];
    line[n++] = hex[d[i] & 15];
  }
  n += (size_t)sprintf(line + n, ":%08x\n", fnv1a(line + 1, n - 1));
  write_all(console, line, n);
}

/* Data from the device, in lines of at most 1 KiB of payload. */
static void send_data(int chan, const unsigned char *d, size_t len) {
  while (len > 0) {
    size_t n = len > 1024 ? 1024 : len;
    send_frame(chan, 'D', d, n);
    d += n;
    len -= n;
  }
}

static void close_channel(int chan) {
  if (channels[chan].fd >= 0) close(channels[chan].fd);
  channels[chan].fd = -1;
  channels[chan].in_len = 0;
}

/* The errno names of xs_wire.h's xsd_errors, for the write()s the device fails. */
static const char *errno_name(int e) {
  static const struct { int e; const char *name; } names[] = {
    { EINVAL, "EINVAL" }, { EACCES, "EACCES" }, { EEXIST, "EEXIST" }, { EISDIR, "EISDIR" },
    { ENOENT, "ENOENT" }, { ENOMEM, "ENOMEM" }, { ENOSPC, "ENOSPC" }, { EIO, "EIO" },
    { ENOTEMPTY, "ENOTEMPTY" }, { ENOSYS, "ENOSYS" }, { EROFS, "EROFS" }, { EBUSY, "EBUSY" },
    { EAGAIN, "EAGAIN" }, { EISCONN, "EISCONN" }, { E2BIG, "E2BIG" }, { EPERM, "EPERM" },
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].e == e) return names[i].name;
  return "EIO";
}

/* The reply to `req` that xenstored would have sent for error `e`. */
static void send_error_reply(int chan, const struct xsd_sockmsg *req, int e) {
  unsigned char reply[sizeof(struct xsd_sockmsg) + 16];
  const char *name = errno_name(e);
  struct xsd_sockmsg h = { .type = XS_ERROR, .req_id = req->req_id, .tx_id = req->tx_id,
                           .len = (uint32_t)strlen(name) + 1 };
  memcpy(reply, &h, sizeof h);
  memcpy(reply + sizeof h, name, h.len);
  send_data(chan, reply, sizeof h + h.len);
}

static int unhex(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Bytes from dom0 for a channel: written to the device one whole message at a time. */
static void feed(int chan, const char *hexdata, size_t hexlen) {
  struct channel *c = &channels[chan];
  for (size_t i = 0; i + 1 < hexlen; i += 2) {
    c->in[c->in_len++] = (unsigned char)(unhex(hexdata[i]) << 4 | unhex(hexdata[i + 1]));
    if (c->in_len >= sizeof(struct xsd_sockmsg)) {
      struct xsd_sockmsg h;
      memcpy(&h, c->in, sizeof h);
      size_t want = sizeof h + h.len;
      if (want > MAX_MSG) { send_frame(chan, 'C', "E2BIG", 5); close_channel(chan); return; }
      if (c->in_len == want) {
        ssize_t w = write(c->fd, c->in, want);
        c->in_len = 0;
        if (w < 0) send_error_reply(chan, &h, errno);
        else if (w != (ssize_t)want) { send_frame(chan, 'C', "EIO", 3); close_channel(chan); return; }
      }
    }
  }
}

static void bad_frame(const char *line, size_t len) {
  send_frame(0, 'E', line, len > 40 ? 40 : len);
}

/* One line from dom0; anything that is not a valid host frame is ignored or reported. */
static void handle_line(const char *line, size_t len) {
  const char *start = memchr(line, '~', len);
  if (!start || (size_t)(line + len - start) < 14 || start[1] != 'H') return;
  len -= (size_t)(start - line);
  line = start;
  const char *colon = line + len - 9;
  if (*colon != ':') { bad_frame(line, len); return; }
  uint32_t sum = 0;
  for (int i = 1; i <= 8; i++) {
    int v = unhex(colon[i]);
    if (v < 0) { bad_frame(line, len); return; }
    sum = sum << 4 | (uint32_t)v;
  }
  if (sum != fnv1a(line + 1, (size_t)(colon - line - 1))) { bad_frame(line, len); return; }
  int hi = unhex(line[2]), lo = unhex(line[3]);
  if (hi < 0 || lo < 0 || hi * 16 + lo >= RELAY_CHANNELS) { bad_frame(line, len); return; }
  int chan = hi * 16 + lo;
  char op = line[4];
  const char *payload = line + 5;
  size_t plen = (size_t)(colon - payload);
  switch (op) {
  case 'P':
    send_frame(chan, 'P', NULL, 0);
    break;
  case 'O':
    close_channel(chan);
    channels[chan].fd = open("/dev/xen/xenbus", O_RDWR | O_NONBLOCK);
    if (channels[chan].fd < 0) send_frame(chan, 'O', strerror(errno), strlen(strerror(errno)));
    else send_frame(chan, 'O', NULL, 0);
    break;
  case 'D':
    if (channels[chan].fd < 0) send_frame(chan, 'C', "EBADF", 5);
    else feed(chan, payload, plen);
    break;
  case 'C':
    close_channel(chan);
    send_frame(chan, 'C', NULL, 0);
    break;
  default:
    bad_frame(line, len);
  }
}

int main(void) {
  console = open("/dev/hvc0", O_RDWR | O_NOCTTY);
  if (console < 0) { perror("/dev/hvc0"); return 1; }
  struct termios t;
  if (tcgetattr(console, &t) == 0) {
    cfmakeraw(&t);
    tcsetattr(console, TCSANOW, &t);
  }
  for (int i = 0; i < RELAY_CHANNELS; i++) channels[i].fd = -1;
  send_frame(0, 'P', NULL, 0);
  static char line[LINE_MAX_HEX];
  size_t line_len = 0;
  for (;;) {
    struct pollfd fds[RELAY_CHANNELS + 1];
    int chan_of[RELAY_CHANNELS + 1];
    int n = 0;
    fds[n].fd = console;
    fds[n].events = POLLIN;
    chan_of[n++] = -1;
    for (int i = 0; i < RELAY_CHANNELS; i++) {
      if (channels[i].fd < 0) continue;
      fds[n].fd = channels[i].fd;
      fds[n].events = POLLIN;
      chan_of[n++] = i;
    }
    if (poll(fds, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    for (int k = 1; k < n; k++) {
      if (!fds[k].revents) continue;
      int chan = chan_of[k];
      static unsigned char buf[MAX_MSG];
      ssize_t r = read(channels[chan].fd, buf, sizeof buf);
      if (r > 0) send_data(chan, buf, (size_t)r);
      else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        close_channel(chan);
        send_frame(chan, 'C', "EOF", 3);
      }
    }
    if (fds[0].revents & POLLIN) {
      char buf[4096];
      ssize_t r = read(console, buf, sizeof buf);
      for (ssize_t i = 0; i < r; i++) {
        if (buf[i] == '\n' || buf[i] == '\r') {
          if (line_len) handle_line(line, line_len);
          line_len = 0;
        } else if (line_len < sizeof line) {
          line[line_len++] = buf[i];
        } else {
          line_len = 0; /* too long to be a frame: drop it */
        }
      }
    }
  }
}
