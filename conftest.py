"""Test-session set-up shared by every test directory.

Eight host devices let the sharding tests compare one device with eight on a
CPU-only machine. XLA reads the flag when its backend starts, so it is set here,
before any test module imports JAX; a flag given by the caller is kept.
"""

import os

_DEVICES_FLAG = '--xla_force_host_platform_device_count'
if _DEVICES_FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + f' {_DEVICES_FLAG}=8'
  ).strip()
