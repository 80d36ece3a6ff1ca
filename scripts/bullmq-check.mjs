// BullMQ end to end against one server (strata or redis-server):
// normal, delayed, prioritised and repeatable jobs, retries with
// exponential backoff, a worker killed mid-job whose job is retried after
// the stall interval, QueueEvents completions and a parent/child flow.
// Every job must complete exactly once with the right result. Prints
// `RESULT <label> <jobs/s>` for the throughput part.
//
// usage: node bullmq-check.mjs <port> <label> [jobs]
// (as `node bullmq-check.mjs stall-worker <port> <prefix>` it is the
// worker that gets killed)

import { Queue, Worker, QueueEvents, FlowProducer } from 'bullmq';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function fail(msg) {
  console.error(`FAIL ${msg}`);
  process.exit(1);
}

if (process.argv[2] === 'stall-worker') {
  // Takes the job, says so, and never finishes: the parent kills it.
  const connection = { host: '127.0.0.1', port: Number(process.argv[3]) };
  const prefix = process.argv[4];
  new Worker(
    'stall',
    async () => {
      console.log('TOOK');
      await sleep(600000);
    },
    { connection, prefix, lockDuration: 1000, stalledInterval: 1000 },
  );
} else {
  main().then(
    () => process.exit(0),
    (e) => fail(e.stack || String(e)),
  );
}

async function main() {
  const port = Number(process.argv[2]);
  const label = process.argv[3];
  const jobs = Number(process.argv[4] || 2000);
  const connection = { host: '127.0.0.1', port };
  const prefix = `chk${Date.now()}`;
  const closers = [];

  // ---- throughput: plain jobs through two workers, seen by QueueEvents
  const queue = new Queue('work', { connection, prefix });
  const events = new QueueEvents('work', { connection, prefix });
  closers.push(queue, events);
  await events.waitUntilReady();
  const completedEvents = new Map();
  events.on('completed', ({ jobId, returnvalue }) => {
    completedEvents.set(jobId, (completedEvents.get(jobId) || 0) + 1);
  });
  const runs = new Map();
  const handler = async (job) => {
    runs.set(job.id, (runs.get(job.id) || 0) + 1);
    if (job.data.kind === 'retry' && job.attemptsMade < 2) {
      throw new Error(`attempt ${job.attemptsMade + 1} fails on purpose`);
    }
    return { doubled: job.data.x * 2 };
  };
  for (let i = 0; i < 2; i++) {
    closers.push(new Worker('work', handler, { connection, prefix, concurrency: 25 }));
  }
  const started = Date.now();
  const added = await queue.addBulk(
    Array.from({ length: jobs }, (_, i) => ({ name: 'plain', data: { x: i } })),
  );
  await until('plain jobs', async () => (await queue.getJobCounts('completed')).completed >= jobs);
  const seconds = (Date.now() - started) / 1000;

  // ---- delayed, prioritised, retried and repeatable jobs
  const delayed = await queue.add('delayed', { x: 100001 }, { delay: 700 });
  const prioritised = [];
  for (let i = 0; i < 20; i++) {
    prioritised.push(await queue.add('prio', { x: 200000 + i }, { priority: 1 + (i % 5) }));
  }
  const retried = await queue.add(
    'retry',
    { x: 300000, kind: 'retry' },
    { attempts: 3, backoff: { type: 'exponential', delay: 100 } },
  );
  await queue.add('repeat', { x: 7 }, { repeat: { every: 300, limit: 3 }, jobId: 'rep' });
  const expected = jobs + 1 + 20 + 1 + 3;
  await until('all jobs', async () => (await queue.getJobCounts('completed')).completed >= expected);
  await until('completion events', async () => completedEvents.size >= expected, 20000);

  for (const job of [...added, delayed, ...prioritised, retried]) {
    const done = await queue.getJob(job.id);
    if (!done || done.returnvalue?.doubled !== job.data.x * 2) {
      fail(`job ${job.id} finished with ${JSON.stringify(done?.returnvalue)}`);
    }
    const want = job.id === retried.id ? 3 : 1;
    if (runs.get(job.id) !== want) fail(`job ${job.id} ran ${runs.get(job.id)} times, not ${want}`);
    if (completedEvents.get(job.id) !== 1) fail(`job ${job.id} reported ${completedEvents.get(job.id)} completions`);
  }
  const delayedDone = await queue.getJob(delayed.id);
  if (delayedDone.processedOn - delayedDone.timestamp < 700) fail('the delayed job ran early');
  const counts = await queue.getJobCounts('completed', 'failed', 'waiting', 'active', 'delayed');
  if (counts.completed !== expected || counts.failed !== 0 || counts.active !== 0) {
    fail(`job counts ${JSON.stringify(counts)}, expected ${expected} completed`);
  }

  // ---- a worker killed mid-job: the job is retried after the stall interval
  const stallQueue = new Queue('stall', { connection, prefix });
  closers.push(stallQueue);
  const stallJob = await stallQueue.add('s', { x: 21 });
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'stall-worker', String(port), prefix], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the stalling worker never took its job')), 30000);
    child.stdout.on('data', (d) => {
      if (String(d).includes('TOOK')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  child.kill('SIGKILL');
  let rescued = 0;
  closers.push(
    new Worker(
      'stall',
      async (job) => {
        rescued++;
        return { doubled: job.data.x * 2 };
      },
      { connection, prefix, lockDuration: 1000, stalledInterval: 1000 },
    ),
  );
  await until('the stalled job', async () => (await stallQueue.getJob(stallJob.id))?.finishedOn);
  const stalled = await stallQueue.getJob(stallJob.id);
  if (stalled.returnvalue?.doubled !== 42 || rescued !== 1) {
    fail(`stalled job: ${JSON.stringify(stalled.returnvalue)}, run ${rescued} times after the kill`);
  }

  // ---- a flow: the parent runs after its children, with their results
  const flowWorker = new Worker(
    'flow',
    async (job) => {
      if (job.name === 'parent') {
        const values = Object.values(await job.getChildrenValues());
        return { sum: values.reduce((a, v) => a + v.n, 0) };
      }
      return { n: job.data.n * 10 };
    },
    { connection, prefix, concurrency: 4 },
  );
  closers.push(flowWorker);
  const flows = new FlowProducer({ connection, prefix });
  closers.push(flows);
  const tree = await flows.add({
    name: 'parent',
    queueName: 'flow',
    data: {},
    children: [1, 2, 3].map((n) => ({ name: `child${n}`, queueName: 'flow', data: { n } })),
  });
  const flowQueue = new Queue('flow', { connection, prefix });
  closers.push(flowQueue);
  await until('the flow', async () => (await flowQueue.getJob(tree.job.id))?.finishedOn);
  const parent = await flowQueue.getJob(tree.job.id);
  if (parent.returnvalue?.sum !== 60) fail(`flow parent returned ${JSON.stringify(parent.returnvalue)}`);

  console.log(`checked ${label}: ${expected} jobs, a stalled job and a flow, each completed exactly once`);
  console.log(`RESULT ${label} ${(jobs / seconds).toFixed(0)}`);
  await Promise.all(closers.map((c) => c.close().catch(() => {})));
}
