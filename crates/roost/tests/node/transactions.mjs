// What @libsql/client does when a transaction ends early against a Roost server: a write
// batch whose statement fails or rolls back, and an interactive transaction whose SQL rolls
// back. Usage: node transactions.mjs URL   (token from ROOST_TOKEN, if any)
// Prints one JSON summary line: per case, the error code the client raised and how many rows
// were left committed.
import { createClient } from "@libsql/client";

const url = process.argv[2];
if (!url) {
  console.error("usage: node transactions.mjs URL");
  process.exit(2);
}
const client = createClient({ url, authToken: process.env.ROOST_TOKEN || undefined });
const summary = {};

await client.execute("CREATE TABLE tx (x INTEGER PRIMARY KEY)");

const committed = async () => {
  const rs = await client.execute("SELECT count(*) AS n FROM tx");
  await client.execute("DELETE FROM tx");
  return Number(rs.rows[0].n);
};

// The error code a call raises (null when it succeeds).
const codeOf = async (call) => {
  try {
    await call();
    return null;
  } catch (e) {
    return e.code ?? String(e);
  }
};

const batches = {
  failing: ["INSERT INTO tx VALUES (1)", "INSERT INTO tx VALUES (1)", "INSERT INTO tx VALUES (2)"],
  rollback: ["INSERT INTO tx VALUES (1)", "ROLLBACK", "INSERT INTO tx VALUES (2)"],
  orRollback: ["INSERT INTO tx VALUES (1)", "INSERT OR ROLLBACK INTO tx VALUES (1)", "INSERT INTO tx VALUES (2)"],
};
for (const [name, stmts] of Object.entries(batches)) {
  const error = await codeOf(() => client.batch(stmts, "write"));
  summary[`batch_${name}`] = { error, committed: await committed() };
}

// Interactive transactions: the SQL ends the transaction, then the next statement.
const enders = { rollback: "ROLLBACK", orRollback: "INSERT OR ROLLBACK INTO tx VALUES (1)" };
for (const [name, ender] of Object.entries(enders)) {
  const tx = await client.transaction("write");
  await tx.execute("INSERT INTO tx VALUES (1)");
  const endError = await codeOf(() => tx.execute(ender));
  const afterError = await codeOf(() => tx.execute("INSERT INTO tx VALUES (2)"));
  const commitError = await codeOf(() => tx.commit());
  tx.close();
  summary[`transaction_${name}`] = { endError, afterError, commitError, committed: await committed() };
}

client.close();
console.log(JSON.stringify(summary));
