// Screenshots of the Dagster UI for the README. With `make dagster-ui` running (port 3070, demo built):
//   npm install playwright-core@1 && node docs/screenshots/take_screenshots.js   (uses Debian chromium)
const { chromium } = require('playwright-core');
(async () => {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'] });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const base = 'http://127.0.0.1:3070';
  await page.goto(base + '/asset-groups', { waitUntil: 'networkidle' });
  const skip = page.getByRole('button', { name: 'Skip' });
  if (await skip.count()) { await skip.click(); }
  const shots = [
    ['asset_graph', '/asset-groups?expanded=datasets%2Cpseudo_gt%2Ctraining%2Cbenchmarks'],
    ['training_group', '/locations/orchestration.definitions/asset-groups/training'],
    ['benchmark_asset', '/assets/benchmark?view=partitions&partition=demo_h36m'],
  ];
  for (const [name, path] of shots) {
    await page.goto(base + path, { waitUntil: 'networkidle' });
    await page.waitForTimeout(4000);
    await page.screenshot({ path: `docs/screenshots/${name}.png` });
  }
  await browser.close();
})();
