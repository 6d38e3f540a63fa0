import fs from 'node:fs';
import { startDaemon } from './helpers/daemon';

test.each([
  [0, '0o660', 0o660],
  [2, '0o600', 0o600],
])('workers=%d: local_chmod %s applies to the Unix socket', async (workers, spec, mode) => {
  const d = await startDaemon({ workers, protocolExtra: `local_chmod = "${spec}";` });
  try {
    const st = fs.statSync(d.socketPath);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(mode);
  } finally {
    await d.stop();
  }
});
