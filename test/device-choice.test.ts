/**
 * Which device `auto` resolves to (src/engine/engine.ts, resolveDevice):
 * the first GPU the CUDA backend runs on, passing over older ones, or the
 * CPU when the driver is too old for CUDA to start, and saying why. The GPUs are described as the addon's cudaDevices() reports
 * them, since no GPU older than the kernels' compute capability 8.0, nor an
 * old driver, is at hand (CI has no GPU at all, the GPU machine an H100 or
 * H200); the addon's own reports are checked in native-engine.test.ts and
 * test/gpu/.
 */
import { strict as assert } from 'assert';
import { resolveDevice } from '../src/engine/engine';
import type { CudaDeviceReport } from '../src/engine/native';

const T4: CudaDeviceReport = {
  ordinal: 0, name: 'Tesla T4', computeCapability: '7.5',
  unsupported: 'cuda:0 (Tesla T4) has compute capability 7.5; FusedRT\'s CUDA kernels need 8.0 or newer (...); use device "cpu"',
};
const OLD_DRIVER = 'the NVIDIA driver supports CUDA 12.4, but FusedRT was built with CUDA 13.0: update the driver, or use device "cpu"';
const A100: CudaDeviceReport = { ordinal: 1, name: 'NVIDIA A100-SXM4-80GB', computeCapability: '8.0', unsupported: '' };

describe('device auto', () => {
  it('picks the first GPU the kernels run on', () => {
    assert.deepEqual(resolveDevice('auto', ['cuda', 'cpu'], [{ ...A100, ordinal: 0 }]), { device: 'cuda:0' });
  });

  it('passes over an older GPU for a newer one, and says why', () => {
    assert.deepEqual(resolveDevice('auto', ['cuda', 'cpu'], [T4, A100]), { device: 'cuda:1', passedOver: T4.unsupported });
  });

  it('runs on the CPU when every GPU is too old, and says why', () => {
    assert.deepEqual(resolveDevice('auto', ['cpu'], [T4]), { device: 'cpu', passedOver: T4.unsupported });
  });

  it('runs on the CPU without a word when there is no GPU or no CUDA backend', () => {
    assert.deepEqual(resolveDevice('auto', ['cpu'], []), { device: 'cpu' });
  });

  it('runs on the CPU when the driver is too old for CUDA to start, and says so', () => {
    assert.deepEqual(resolveDevice('auto', ['cpu'], [], OLD_DRIVER), { device: 'cpu', passedOver: OLD_DRIVER });
    assert.throws(() => resolveDevice('cuda:0', ['cpu'], [], OLD_DRIVER), (err: Error & { code?: string }) =>
      err.code === 'E_BACKEND' && err.message === `device "cuda:0" was asked for, but ${OLD_DRIVER}`);
  });

  it('leaves a GPU asked for by name to the addon, which refuses an old one with its reason', () => {
    assert.deepEqual(resolveDevice('cuda:0', ['cpu'], [T4]), { device: 'cuda:0' });
    assert.deepEqual(resolveDevice('cuda', ['cuda', 'cpu'], [T4, A100]), { device: 'cuda' });
  });

  it('refuses a GPU asked for by name where there is no CUDA backend or device', () => {
    assert.throws(() => resolveDevice('cuda', ['cpu'], []), (err: Error & { code?: string }) =>
      err.code === 'E_BACKEND' && /no CUDA backend or this machine no CUDA device/.test(err.message));
    assert.throws(() => resolveDevice('gpu' as 'cuda', ['cpu'], []), (err: Error & { code?: string }) => err.code === 'E_INPUT');
  });
});
