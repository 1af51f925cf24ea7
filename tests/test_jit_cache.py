"""The command-line tools' compilation cache: where it goes, and that a compile lands there."""

import os
import subprocess
import sys

# Enables the cache, compiles one small program (cached whatever its compile time), prints
# the directory in use.
_RUN = """
import jax
from poetjax import jit_cache
jit_cache.enable()
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.jit(lambda x: x * 2 + 1)(jax.numpy.arange(3.0)).block_until_ready()
print(jax.config.jax_compilation_cache_dir)
"""


def _run(env):
  env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
  proc = subprocess.run([sys.executable, '-c', _RUN], env=env, capture_output=True, text=True,
                        timeout=120, check=True)
  return proc.stdout.strip().splitlines()[-1]


def test_default_directory_is_under_the_user_cache_and_receives_the_compile(tmp_path):
  used = _run({'JAX_COMPILATION_CACHE_DIR': None, 'XDG_CACHE_HOME': str(tmp_path)})
  assert used == str(tmp_path / 'poetjax' / 'jit')
  assert any((tmp_path / 'poetjax' / 'jit').iterdir())


def test_jax_own_setting_wins(tmp_path):
  mine = tmp_path / 'mine'
  used = _run({'JAX_COMPILATION_CACHE_DIR': str(mine), 'XDG_CACHE_HOME': str(tmp_path / 'x')})
  assert used == str(mine) and any(mine.iterdir())
  assert not (tmp_path / 'x').exists()
