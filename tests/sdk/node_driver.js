// Drives the official `mixpanel` npm package (mixpanel-node) for tests/e2e/test_sdk_node.py.
//
// Usage: node node_driver.js '<plan JSON>'   or the plan on stdin (no argument; a plan
// may outgrow the 128 KiB a single argument can hold). Run with cwd tests/sdk so that
// require("mixpanel") resolves.
//
// The plan names the clients to create (Mixpanel.init(token, config)) and the calls to
// make, in order:
//   {"clients": {"<name>": {"token": "...", "config": {...},
//                           "service_account": ["user", "secret", "project_id"]}},
//    "steps": [{"client": "<name>", "call": "people.set", "args": [...]}]}
// Each call gets a callback appended as its last argument and the next step starts only
// once it has been called: a profile update must reach the server before the next one,
// or the operations could be applied out of order. (The library still sends the chunks of
// one track_batch/import_batch concurrently, as it always does.)
// JSON cannot hold a Date, so {"$date": <ms>} anywhere in args becomes new Date(ms): the
// library treats Dates specially (times become milliseconds, properties ISO strings).
//
// Prints one JSON line: [{"call": ..., "error": null | "<message(s)>"}, ...] and exits.
"use strict";

const fs = require("fs");
const Mixpanel = require("mixpanel");

// A library call that never calls back (it returns early on bad input) must not hang
// the test: report it instead.
const STEP_TIMEOUT_MS = 20000;

function revive(value) {
  if (Array.isArray(value)) {
    return value.map(revive);
  }
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$date") {
      return new Date(value.$date);
    }
    const out = {};
    for (const key of keys) {
      out[key] = revive(value[key]);
    }
    return out;
  }
  return value;
}

function describe(error) {
  if (error === null || error === undefined) {
    return null;
  }
  if (Array.isArray(error)) {
    // track_batch / import_batch: an array of errors, or null when every chunk succeeded.
    return error.map(describe).join("; ");
  }
  return error instanceof Error ? error.message : String(error);
}

// The library warns about deprecated secrets on every init; keep stdout for the result.
const quietLogger = {
  trace() {},
  debug() {},
  info() {},
  warn(message) {
    process.stderr.write(String(message) + "\n");
  },
  error(message) {
    process.stderr.write(String(message) + "\n");
  },
};

function resolve(target, dotted) {
  const parts = dotted.split(".");
  let owner = target;
  for (const part of parts.slice(0, -1)) {
    owner = owner[part];
  }
  const method = owner[parts[parts.length - 1]];
  if (typeof method !== "function") {
    throw new Error("no such library call: " + dotted);
  }
  return method.bind(owner);
}

function callOnce(client, step) {
  return new Promise((done) => {
    let finished = false;
    const finish = (error) => {
      if (!finished) {
        finished = true;
        clearTimeout(timer);
        done(error);
      }
    };
    const timer = setTimeout(
      () => finish("no callback within " + STEP_TIMEOUT_MS + " ms"),
      STEP_TIMEOUT_MS,
    );
    try {
      resolve(client, step.call)(...revive(step.args || []), (error) =>
        finish(describe(error)),
      );
    } catch (thrown) {
      finish("threw: " + describe(thrown));
    }
  });
}

async function main() {
  const plan = JSON.parse(
    process.argv.length > 2 ? process.argv[2] : fs.readFileSync(0, "utf8"),
  );
  const clients = {};
  for (const [name, spec] of Object.entries(plan.clients)) {
    const config = { logger: quietLogger, ...spec.config };
    if (spec.service_account) {
      config.credentials = new Mixpanel.ServiceAccountCredentials(
        ...spec.service_account,
      );
    }
    clients[name] = Mixpanel.init(spec.token, config);
  }
  const results = [];
  for (const step of plan.steps) {
    const error = await callOnce(clients[step.client], step);
    results.push({ call: step.call, error: error });
  }
  // Exit once the line is out: the library's keep-alive agents would hold the event
  // loop open.
  process.stdout.write(JSON.stringify(results) + "\n", () => process.exit(0));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack) + "\n");
  process.exit(2);
});
