"""Exercises the Python `libsql-client` against a Roost server.

Usage: python client.py URL   (token from ROOST_TOKEN, if any). An http:// URL speaks sqld's
HTTP API v1 (/v1/execute, /v1/batch); a ws:// URL speaks Hrana over WebSocket (hrana2).
Prints one JSON summary line; exits non-zero on any unexpected failure.
"""
import json
import os
import sys

import libsql_client

url = sys.argv[1]
summary = {}
with libsql_client.create_client_sync(url, auth_token=os.environ.get("ROOST_TOKEN")) as client:
    client.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, data BLOB)")
    ins = client.execute(
        "INSERT INTO items (name, qty, price, data) VALUES (?, ?, ?, ?)", ["apple", 3, 1.25, b"\x01\x02\x03"]
    )
    summary["insert"] = {"rowsAffected": ins.rows_affected, "lastInsertRowid": ins.last_insert_rowid}
    client.execute("INSERT INTO items (name, qty) VALUES (:name, :qty)", {"name": "pear", "qty": 7})
    sel = client.execute("SELECT id, name, qty, price, data FROM items WHERE name = ?", ["apple"])
    row = sel.rows[0]
    summary["select"] = {
        "columns": list(sel.columns),
        "row": [row[0], row[1], row[2], row[3], list(row[4])],
    }
    results = client.batch(
        [
            ("INSERT INTO items (name, qty) VALUES (?, ?)", ["plum", 1]),
            "UPDATE items SET qty = qty + 1 WHERE name = 'plum'",
            "SELECT count(*) AS n FROM items",
        ]
    )
    summary["batch"] = {"results": len(results), "updated": results[1].rows_affected, "count": results[2].rows[0][0]}
    try:
        client.batch(["INSERT INTO items (name) VALUES ('ghost')", "INSERT INTO items (name) VALUES (NULL)"])
        summary["failedBatch"] = {"error": None}
    except libsql_client.LibsqlError as e:
        ghosts = client.execute("SELECT count(*) FROM items WHERE name = 'ghost'").rows[0][0]
        summary["failedBatch"] = {"error": e.code, "rolledBack": ghosts == 0}
    try:
        client.execute("SELECT * FROM missing")
        summary["sqlError"] = None
    except libsql_client.LibsqlError as e:
        summary["sqlError"] = {"code": e.code, "message": str(e)}
    if url.startswith("ws"):
        with client.transaction() as tx:
            tx.execute("INSERT INTO items (name, qty) VALUES ('kiwi', 5)")
            inside = tx.execute("SELECT count(*) FROM items").rows[0][0]
            tx.commit()
        with client.transaction() as tx:
            tx.execute("INSERT INTO items (name) VALUES ('rolled-back')")
            tx.rollback()
        summary["transaction"] = {"countInside": inside}
    summary["names"] = [r[0] for r in client.execute("SELECT name FROM items ORDER BY id").rows]
print(json.dumps(summary))
