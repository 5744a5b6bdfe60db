/*
 * xenode-hotplug: the real-Xen tier's hotplug script for disks and NICs, one static
 * program that libxl runs in place of Xen's /etc/xen/scripts/block and vif-bridge when a
 * test names it in a device's `script=` (xl-disk-configuration(5),
 * xl-network-configuration(5)). libxl gives a hotplug script 10 s; under QEMU's emulation
 * a PV dom0 needs about a second per process it starts, and the stock bash scripts start
 * dozens (sourced helpers, a lock, sharing checks over every mount and every guest's
 * disk, firewall probes), so they are killed before they finish. This does the part a
 * test's devices need, in one process:
 *
 *   vbd add       the disk's target (`params`) must be a block device (the test's loop
 *                 device): writes physical-device (major:minor in hex, what blkback
 *                 opens), physical-device-path and hotplug-status = connected
 *   vbd remove    nothing (the device belongs to the test)
 *   vif online    puts the backend interface ($vif) into the NIC's bridge, brings it up,
 *                 writes hotplug-status = connected
 *   vif offline   brings the interface down
 *
 * libxl runs it as `xenode-hotplug COMMAND [type_if=...]` with XENBUS_TYPE (vbd, vif),
 * XENBUS_PATH (backend/<type>/<domid>/<devid>, relative to dom0's home) and, for a vif,
 * vif. XenStore is reached through /dev/xen/xenbus, as xenode-guest-xs does in guests.
 * On failure it writes hotplug-error and hotplug-status = error and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <xen/io/xs_wire.h>

static int xb = -1;
static const char *base;

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

/* One request; the reply's payload (NUL-terminated) in out. Returns 0, or -1 on XS_ERROR or I/O failure. */
static int request(uint32_t type, const char *body, size_t len, char *out) {
  static char buf[sizeof(struct xsd_sockmsg) + XENSTORE_PAYLOAD_MAX];
  struct xsd_sockmsg msg = { .type = type, .req_id = 1, .tx_id = 0, .len = (uint32_t)len };
  if (len > XENSTORE_PAYLOAD_MAX) return -1;
  memcpy(buf, &msg, sizeof msg);
  memcpy(buf + sizeof msg, body, len);
  if (full_write(xb, buf, sizeof msg + len) < 0) return -1;
  if (full_read(xb, &msg, sizeof msg) < 0 || msg.len > XENSTORE_PAYLOAD_MAX || full_read(xb, out, msg.len) < 0) return -1;
  out[msg.len] = '\0';
  return msg.type == XS_ERROR ? -1 : 0;
}

/* Reads XENBUS_PATH/key into out. */
static int xs_read(const char *key, char *out) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", base, key);
  return request(XS_READ, path, strlen(path) + 1, out);
}

/* Writes XENBUS_PATH/key = value. */
static int xs_write(const char *key, const char *value) {
  static char body[XENSTORE_PAYLOAD_MAX + 1], reply[XENSTORE_PAYLOAD_MAX + 1];
  int n = snprintf(body, sizeof body, "%s/%s", base, key);
  size_t vlen = strlen(value);
  if (n < 0 || (size_t)n + 1 + vlen > XENSTORE_PAYLOAD_MAX) return -1;
  memcpy(body + n + 1, value, vlen);
  return request(XS_WRITE, body, (size_t)n + 1 + vlen, reply);
}

static int fail(const char *what) {
  fprintf(stderr, "xenode-hotplug: %s: %s\n", base, what);
  xs_write("hotplug-error", what);
  xs_write("hotplug-status", "error");
  return 1;
}

static int vbd_add(void) {
  static char target[XENSTORE_PAYLOAD_MAX + 1];
  char numbers[32], msg[XENSTORE_PAYLOAD_MAX + 64];
  struct stat st;
  if (xs_read("params", target) < 0) return fail("no params");
  if (stat(target, &st) < 0 || !S_ISBLK(st.st_mode)) {
    snprintf(msg, sizeof msg, "%s is not a block device", target);
    return fail(msg);
  }
  snprintf(numbers, sizeof numbers, "%x:%x", major(st.st_rdev), minor(st.st_rdev));
  if (xs_write("physical-device", numbers) < 0 || xs_write("physical-device-path", target) < 0 ||
      xs_write("hotplug-status", "connected") < 0)
    return fail("cannot write to xenstore");
  return 0;
}

static int vif_set(int online) {
  static char bridge[XENSTORE_PAYLOAD_MAX + 1];
  const char *vif = getenv("vif");
  struct ifreq ifr;
  if (vif == NULL || strlen(vif) >= IFNAMSIZ) return online ? fail("$vif does not name the backend interface") : 0;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  if (s < 0) return online ? fail("socket") : 0;
  if (online) {
    if (xs_read("bridge", bridge) < 0 || strlen(bridge) >= IFNAMSIZ) return fail("no bridge");
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, vif);
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) return fail(strerror(errno));
    int index = ifr.ifr_ifindex;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, bridge);
    ifr.ifr_ifindex = index;
    if (ioctl(s, SIOCBRADDIF, &ifr) < 0) return fail(strerror(errno));
  }
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, vif);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    if (online) ifr.ifr_flags |= IFF_UP;
    else ifr.ifr_flags &= ~IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0 && online) return fail(strerror(errno));
  } else if (online) return fail(strerror(errno));
  close(s);
  return online ? (xs_write("hotplug-status", "connected") < 0 ? fail("cannot write to xenstore") : 0) : 0;
}

int main(int argc, char **argv) {
  const char *type = getenv("XENBUS_TYPE");
  base = getenv("XENBUS_PATH");
  if (argc < 2 || type == NULL || base == NULL) {
    fprintf(stderr, "usage: XENBUS_TYPE=vbd|vif XENBUS_PATH=... %s add|remove|online|offline\n", argv[0]);
    return 2;
  }
  xb = open("/dev/xen/xenbus", O_RDWR);
  if (xb < 0) { perror("/dev/xen/xenbus"); return 1; }
  const char *cmd = argv[1];
  if (strcmp(type, "vbd") == 0) {
    if (strcmp(cmd, "add") == 0) return vbd_add();
    if (strcmp(cmd, "remove") == 0) return 0;
  } else if (strcmp(type, "vif") == 0) {
    if (strcmp(cmd, "online") == 0) return vif_set(1);
    if (strcmp(cmd, "offline") == 0) return vif_set(0);
    if (strcmp(cmd, "add") == 0 || strcmp(cmd, "remove") == 0) return 0;
  }
  fprintf(stderr, "xenode-hotplug: %s %s is not something it does\n", type, cmd);
  return 1;
}
