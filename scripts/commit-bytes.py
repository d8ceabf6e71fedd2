"""One-row durable commits through a running `roost serve`, measured from outside: bytes the
server process wrote to disk (/proc/<pid>/io write_bytes) per commit."""
import http.client, json, sys, threading, time

port, pid, actors, commits, threads = int(sys.argv[1]), int(sys.argv[2]), 100, 6000, 8

def io_write_bytes():
    for line in open(f"/proc/{pid}/io"):
        if line.startswith("write_bytes:"):
            return int(line.split()[1])

def post(conn, path, body):
    conn.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json"})
    r = conn.getresponse(); data = r.read()
    assert r.status == 200, (r.status, data)

conn = http.client.HTTPConnection("127.0.0.1", port)
for a in range(actors):
    post(conn, f"/v1/actors/w{a}/query", {"sql": "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)"})
time.sleep(2)
before, started = io_write_bytes(), time.time()
def work(k):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(commits // threads):
        post(c, f"/v1/actors/w{(i * threads + k) % actors}/query", {"sql": "INSERT INTO t(v) VALUES (?)", "params": [f"row {i} of {k}"]})
ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
elapsed = time.time() - started
time.sleep(3)  # memtable flushes and compactions caused by these commits
after = io_write_bytes()
print(json.dumps({"commits": commits, "commits_per_s": round(commits / elapsed), "write_bytes_per_commit": round((after - before) / commits)}))
