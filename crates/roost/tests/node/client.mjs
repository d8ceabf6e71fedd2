// Exercises @libsql/client (Hrana over HTTP) against a Roost server.
// Usage: node client.mjs http://127.0.0.1:PORT/db/ACTOR/   (token from ROOST_TOKEN, if any)
// Prints one JSON summary line; exits non-zero on any unexpected failure.
import { createClient } from "@libsql/client";

const url = process.argv[2];
if (!url) {
  console.error("usage: node client.mjs URL");
  process.exit(2);
}
const client = createClient({ url, authToken: process.env.ROOST_TOKEN || undefined });
const summary = {};

await client.execute(
  "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, data BLOB)",
);

const ins = await client.execute({
  sql: "INSERT INTO items (name, qty, price, data) VALUES (?, ?, ?, ?)",
  args: ["apple", 3, 1.25, new Uint8Array([1, 2, 3])],
});
summary.insert = { rowsAffected: ins.rowsAffected, lastInsertRowid: String(ins.lastInsertRowid) };

await client.execute({
  sql: "INSERT INTO items (name, qty) VALUES (:name, :qty)",
  args: { name: "pear", qty: 7 },
});

const sel = await client.execute({
  sql: "SELECT id, name, qty, price, data FROM items WHERE name = ?",
  args: ["apple"],
});
const row = sel.rows[0];
summary.select = {
  columns: sel.columns,
  row: {
    id: Number(row.id),
    name: row.name,
    qty: Number(row.qty),
    price: row.price,
    data: Array.from(new Uint8Array(row.data)),
  },
};

const batch = await client.batch(
  [
    { sql: "INSERT INTO items (name, qty) VALUES (?, ?)", args: ["plum", 1] },
    "UPDATE items SET qty = qty + 1 WHERE name = 'plum'",
    "SELECT count(*) AS n FROM items",
  ],
  "write",
);
summary.batch = {
  count: Number(batch[2].rows[0].n),
  updated: batch[1].rowsAffected,
  results: batch.length,
};

// A failing write batch is all or nothing.
try {
  await client.batch(
    ["INSERT INTO items (name) VALUES ('ghost')", "INSERT INTO items (name) VALUES (NULL)"],
    "write",
  );
  summary.failedBatch = { error: null };
} catch (e) {
  const ghosts = await client.execute("SELECT count(*) AS n FROM items WHERE name = 'ghost'");
  summary.failedBatch = { error: e.code ?? String(e), rolledBack: Number(ghosts.rows[0].n) === 0 };
}

const tx = await client.transaction("write");
await tx.execute({ sql: "INSERT INTO items (name, qty) VALUES (?, ?)", args: ["kiwi", 5] });
const inside = await tx.execute("SELECT count(*) AS n FROM items");
await tx.commit();
summary.transaction = { countInside: Number(inside.rows[0].n), committed: tx.closed };

const tx2 = await client.transaction("write");
await tx2.execute("INSERT INTO items (name) VALUES ('rolled-back')");
await tx2.rollback();
const after = await client.execute("SELECT count(*) AS n FROM items");
summary.rollback = { countAfter: Number(after.rows[0].n) };

// Declared types reach the client (ORMs read them).
summary.columnTypes = sel.columnTypes;

// An HTTP-level error (a statement longer than the server's limit is a body over its limit
// here) reaches the user with Roost's code and message, not a bare status.
try {
  await client.execute(`SELECT '${"x".repeat(9 << 20)}'`);
  summary.httpError = null;
} catch (e) {
  summary.httpError = { code: e.code ?? null, message: String(e.message ?? e) };
}

const final = await client.execute("SELECT name FROM items ORDER BY id");
summary.names = final.rows.map((r) => r.name);

client.close();
console.log(JSON.stringify(summary));
