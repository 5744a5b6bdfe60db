import { describe, expect, it } from 'vitest';
import { parseXlConfig, validateDomainConfig } from '../../lib/index.js';

describe('parseXlConfig', () => {
  it('reads a PV config with legacy disk specs, vifs, pci and actions', () => {
    const cfg = parseXlConfig(`# web server
name = "web1"
builder = 'generic'
uuid = "5e2c4a0e-8d1f-4f6b-9c3a-2b7d1e0f9a41"
memory = 512; maxmem = 1024
vcpus = 2
maxvcpus = 4
cpus = "0-3"
kernel = "/boot/vmlinuz"
ramdisk = "/boot/initrd.img"
root = "/dev/xvda1 ro"
extra = "console=hvc0"
disk = [ 'phy:/dev/vg/web1,xvda,w',
         'file:/srv/cd.iso,hdc:cdrom,r',
         'tap:vhd:/srv/data.vhd,xvdb,w' ]
vif = [ 'mac=00:16:3e:00:00:01, bridge=xenbr0, queues=4', 'bridge=xenbr1,ip=10.0.0.2' ]
pci = [ '03:10.1@4,permissive=1' ]
on_poweroff = "destroy"
on_reboot = "restart"
on_crash = "preserve"
`);
    expect(cfg).toMatchObject({
      name: 'web1', type: 'pv', memory: 512, maxMemory: 1024, vcpus: 2, maxVcpus: 4, cpus: '0-3',
      kernel: '/boot/vmlinuz', ramdisk: '/boot/initrd.img', cmdline: 'root=/dev/xvda1 ro console=hvc0',
      onPoweroff: 'destroy', onReboot: 'restart', onCrash: 'preserve',
    });
    expect(cfg.disks).toEqual([
      { target: '/dev/vg/web1', vdev: 'xvda', access: 'rw' },
      { target: '/srv/cd.iso', vdev: 'hdc', access: 'ro', devtype: 'cdrom' },
      { target: '/srv/data.vhd', vdev: 'xvdb', access: 'rw', format: 'vhd' },
    ]);
    expect(cfg.nics).toEqual([{ mac: '00:16:3e:00:00:01', bridge: 'xenbr0', queues: 4 }, { bridge: 'xenbr1', ip: '10.0.0.2' }]);
    expect(cfg.pcis).toEqual([{ bdf: '03:10.1', vslot: 4, permissive: true }]);
  });

  it('reads PVH and HVM configs with key=value disks', () => {
    expect(parseXlConfig('name="a"\ntype="pvh"\nkernel="/k"\nmemory=128\nvcpus=1\ndisk=["vdev=xvda, format=qcow2, target=/srv/a.qcow2"]\n')).toMatchObject({ type: 'pvh', disks: [{ vdev: 'xvda', format: 'qcow2' }] });
    expect(parseXlConfig('name="w"\nbuilder="hvm"\nmemory=2048\nvcpus=2\nvif=["model=e1000,bridge=xenbr0"]\n')).toMatchObject({ type: 'hvm', nics: [{ model: 'e1000' }] });
  });

  it('names file, line and key in its errors', () => {
    expect(() => parseXlConfig('name = "x"\nmemory = "lots"\nvcpus = 2\n')).toThrow(/^xl\.cfg:2: memory: /);
    expect(() => parseXlConfig('name = "x"\n\nvcpus 2\n', { filename: 'web.cfg' })).toThrow(/^web\.cfg:3: vcpus: expected '='/);
    expect(() => parseXlConfig('name = "x\n')).toThrow(/xl\.cfg:1: name: unterminated string/);
    expect(() => parseXlConfig('disk = [ "xvda"\nname="x"')).toThrow(/xl\.cfg:\d: disk/);
    expect(() => parseXlConfig('name="x"\nkernel="/k"\nmemory=1\nvcpus=1\nvif=["colour=red"]\n')).toThrow(/:5: vif: item 1: unknown key 'colour'/);
    expect(() => parseXlConfig('name="x"\nkernel="/k"\nmemory=1\nvcpus=1\npci=["zz:1"]\n')).toThrow(/pci: item 1/);
    expect(() => parseXlConfig('name="x"\nkernel="/k"\nvcpus=1\n')).toThrow(/memory/);
    expect(() => parseXlConfig('name="x"\nkernel="/k"\nmemory=1\nvcpus=1\nmaxmem=0\n')).toThrow(/maxmem/);
  });
});

describe('validateDomainConfig', () => {
  const ok = { name: 'a', type: 'pv', kernel: '/k', memory: 64, vcpus: 1 };
  it('accepts a good config and returns a copy', () => {
    const v = validateDomainConfig(ok);
    expect(v).toEqual(ok);
    expect(v).not.toBe(ok);
  });
  it('names the wrong field and why', () => {
    expect(() => validateDomainConfig({ ...ok, name: 'has space' })).toThrow(/name must be/);
    expect(() => validateDomainConfig({ ...ok, type: 'kvm' })).toThrow(TypeError);
    expect(() => validateDomainConfig({ ...ok, memory: 1.5 })).toThrow(/memory must be an integer/);
    expect(() => validateDomainConfig({ ...ok, vcpus: 0 })).toThrow(RangeError);
    expect(() => validateDomainConfig({ ...ok, maxVcpus: 0 })).toThrow(/maxVcpus/);
    expect(() => validateDomainConfig({ ...ok, kernel: undefined })).toThrow(/kernel is required/);
    expect(() => validateDomainConfig({ ...ok, disks: [{ target: '/a', vdev: 'vda' }] })).toThrow(/disks\[0\]\.vdev/);
    expect(() => validateDomainConfig({ ...ok, disks: [{ target: '/a', vdev: 'xvda' }, { target: '/b', vdev: 'xvda' }] })).toThrow(/used twice/);
    expect(() => validateDomainConfig({ ...ok, nics: [{ mac: 'nope' }] })).toThrow(/nics\[0\]\.mac/);
    expect(() => validateDomainConfig({ ...ok, pcis: [{ bdf: 'x' }] })).toThrow(/pcis\[0\]\.bdf/);
    expect(() => validateDomainConfig({ ...ok, onCrash: 'explode' })).toThrow(/onCrash/);
    expect(() => validateDomainConfig(null)).toThrow(TypeError);
  });
});
