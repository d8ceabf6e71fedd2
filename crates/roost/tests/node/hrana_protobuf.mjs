// Exercises @libsql/hrana-client (which @libsql/client is built on) in Hrana 3 over protobuf
// against a Roost server: HTTP through `v3-protobuf`, or a WebSocket that offers only the
// `hrana3-protobuf` subprotocol. (@libsql/client itself asks for Hrana 2, i.e. JSON.)
// Usage: node hrana_protobuf.mjs URL http|ws   (token from ROOST_TOKEN, if any)
// Prints one JSON summary line; exits non-zero on any unexpected failure.
import * as hrana from "@libsql/hrana-client";

const [url, transport] = process.argv.slice(2);
if (!url || !["http", "ws"].includes(transport)) {
  console.error("usage: node hrana_protobuf.mjs URL http|ws");
  process.exit(2);
}
const jwt = process.env.ROOST_TOKEN || undefined;
let client;
let socket;
if (transport === "ws") {
  socket = new hrana.WebSocket(url, ["hrana3-protobuf"]);
  client = new hrana.WsClient(socket, jwt);
} else {
  client = hrana.openHttp(url, jwt, undefined, undefined, 3);
}
const summary = { version: await client.getVersion() };
summary.encoding = transport === "ws" ? socket.protocol : client._endpoint.encoding;
client.intMode = "bigint";

const stream = client.openStream();
await stream.run("CREATE TABLE t(i INTEGER, f REAL, s TEXT, b BLOB, n)");
const values = [-9223372036854775808n, 1.5, "hé", new Uint8Array([0, 255]), null];
const ins = await stream.run(new hrana.Stmt("INSERT INTO t VALUES (?, ?, ?, ?, ?)").bindIndexes(values));
await stream.run(
  new hrana.Stmt("INSERT INTO t(i, s) VALUES (:i, :s)").bindName("i", 9223372036854775807n).bindName("s", "named"),
);
summary.insert = { affected: ins.affectedRowCount, rowid: String(ins.lastInsertRowid) };

const rows = await stream.query("SELECT i, f, s, b, n FROM t ORDER BY rowid");
const row = rows.rows[0];
summary.select = {
  columns: rows.columnNames,
  decltypes: rows.columnDecltypes,
  first: [String(row.i), row.f, row.s, Array.from(new Uint8Array(row.b)), row.n],
  second: [String(rows.rows[1].i), rows.rows[1].s],
};

try {
  await stream.run("SELEC 1");
  summary.error = "none";
} catch (e) {
  summary.error = e.code;
}

// A batch with conditions, sent as a batch and then through a cursor.
async function batch(useCursor) {
  const b = stream.batch(useCursor);
  const begin = b.step();
  begin.run("BEGIN");
  const bad = b.step().condition(hrana.BatchCond.ok(begin));
  const badResult = bad.run("INSERT INTO t(i) VALUES (1, 2)").catch((e) => e.code);
  const rescue = b.step().condition(hrana.BatchCond.error(bad));
  const rescued = rescue.query("SELECT count(*) AS c FROM t");
  const end = b.step().condition(hrana.BatchCond.not(hrana.BatchCond.isAutocommit(b)));
  end.run("COMMIT");
  await b.execute();
  return { bad: await badResult, count: String((await rescued).rows[0].c) };
}
summary.batch = await batch(false);
summary.cursor = await batch(true);

const described = await stream.describe("SELECT s FROM t WHERE i = ?");
summary.describe = { params: described.paramNames.length, cols: described.columns.map((c) => c.name), readonly: described.isReadonly };
summary.autocommit = await stream.getAutocommit();
// Stored SQL belongs to the socket over WebSocket, to the stream over HTTP.
const sql = (transport === "ws" ? client : stream).storeSql("SELECT count(*) FROM t");
summary.stored = String(await stream.queryValue(sql).then((r) => r.value));
sql.close();
stream.close();
client.close();
console.log(JSON.stringify(summary));
