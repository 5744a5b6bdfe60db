{
  # The one build of record (DESIGN.md, decision 10): npm's install script, node-gyp-build
  # and prebuildify all run it. The addon links against no Xen library: native/xenlibs.cc
  # opens them with dlopen at run time, so it loads on machines without Xen. The Xen
  # headers are needed to build it, and the Xen version they belong to is recorded
  # (XENODE_XEN_VERSION) because libxenctrl and libxenlight change ABI every release.
  'targets': [
    {
      'target_name': 'xenode',
      'sources': [
        'native/addon.cc',
        'native/errors.cc',
        'native/fsops.cc',
        'native/libxl.cc',
        'native/libxl_ops.cc',
        'native/libxl_validate.cc',
        'native/xenlibs.cc',
        'native/xenstore.cc',
        'native/xenstore_ops.cc',
        # The hypervisor interfaces (libxenevtchn, libxengnttab, libxenctrl).
        'native/evtchn.cc',
        'native/gnttab.cc',
        'native/xenctrl.cc',
      ],
      'include_dirs': [
        "<!(node -p \"require('node-addon-api').include_dir\")",
      ],
      'defines': [
        'NAPI_VERSION=8',
        'NAPI_CPP_EXCEPTIONS',
        # Lets node-addon-api drop an error it cannot throw because the environment is
        # being torn down, instead of aborting.
        'NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS',
        'XENODE_XEN_VERSION="<!(pkg-config --modversion xencontrol)"',
      ],
      'cflags': [
        '<!@(pkg-config --cflags xenstore xencontrol)',
        '<!@(pkg-config --cflags xenevtchn xengnttab xentoollog)',
        '<!@(pkg-config --cflags xenlight xentoollog)',
        '-fvisibility=hidden',
        '-Wall',
        '-Wextra',
        '-Wno-unused-parameter',
      ],
      'cflags!': ['-fno-exceptions'],
      'cflags_cc!': ['-fno-exceptions', '-fno-rtti'],
      # GNU C++17: xenctrl.h (through the public Xen headers it includes) uses anonymous
      # structs and aligned attributes that strict ISO mode rejects.
      'cflags_cc': ['-std=gnu++17', '-fexceptions'],
      'libraries': ['-ldl'],
    },
  ],
}
