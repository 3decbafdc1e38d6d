package server

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/chunks"
	"github.com/btyproject/bty/internal/human"
)

// chunkImage is a decoded image of n bytes whose chunks differ: random
// data, a zero chunk, text that compresses, and a short last chunk.
func chunkImage(t *testing.T, n int) []byte {
	t.Helper()
	b := randomBytes(t, n)
	clear(b[1<<20 : 2<<20])
	copy(b[2<<20:3<<20], bytes.Repeat([]byte("bty chunk "), 1<<20/10))
	return b
}

func zstdOf(t *testing.T, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// putImage writes an image file straight into the image root with a
// modification time of its own (a replacement differs from the file
// before even within the file system's time resolution).
func putImage(t *testing.T, root, name string, b []byte, mtime time.Time) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.WriteFile(p+".tmp", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p+".tmp", mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
}

// waitChunks polls GET /images until name's chunk store is ready for
// the file whose sha256 is fileSum ("": any).
func waitChunks(t *testing.T, ts *testServer, name, fileSum string) api.Image {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last api.Image
	for time.Now().Before(deadline) {
		var list []api.Image
		ts.do(t, "GET", "/images", nil, nil).json(t, &list)
		for _, e := range list {
			if e.Name != name {
				continue
			}
			last = e
			if e.Chunks != nil && e.Chunks.State == chunkFailed {
				t.Fatalf("%s: chunk store failed: %s", name, e.Chunks.Error)
			}
			if e.Chunks != nil && e.Chunks.State == chunkReady && (fileSum == "" || *e.SHA256 == fileSum) {
				return e
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: no ready chunk store after 30 s: %+v (chunks %+v)", name, last, last.Chunks)
	return last
}

// decodeStore decodes every chunk of a whole store file: the image.
func decodeStore(t *testing.T, store []byte) (*chunks.Index, []byte) {
	t.Helper()
	x, err := chunks.ReadIndex(bytes.NewReader(store), int64(len(store)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if x.FileSize != int64(len(store)) {
		t.Fatalf("store of %d bytes, its index says %d", len(store), x.FileSize)
	}
	img := make([]byte, x.ImageSize)
	for i, c := range x.Chunks {
		off, n := x.Span(i)
		if err := x.Decode(i, store[c.Off:c.Off+c.Len], img[off:off+n]); err != nil {
			t.Fatal(err)
		}
	}
	return x, img
}

func waitGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there after 20 s", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestChunkStores: an image put into the catalog gets a chunk store,
// served with Range, that decodes to the image; a replaced image gets a
// new one and the old is removed, a deleted one loses it; bad names
// are refused.
func TestChunkStores(t *testing.T) {
	ts := startServer(t, nil)
	raw := chunkImage(t, 3<<20+12345)
	zst := zstdOf(t, raw)
	putImage(t, ts.cfg.ImageRoot, "disk.img.zst", zst, time.Now().Add(-time.Hour))

	e := waitChunks(t, ts, "disk.img.zst", "")
	if *e.SHA256 != sha(zst) || *e.DecodedSHA256 != sha(raw) {
		t.Fatalf("catalog sums %s %s", *e.SHA256, *e.DecodedSHA256)
	}
	c := e.Chunks
	if c.Chunks != 4 || c.ChunkSize != chunks.DefaultChunkSize || c.DoneBytes != int64(len(raw)) || c.TotalBytes != int64(len(raw)) || c.SizeBytes <= 0 {
		t.Errorf("ready store %+v", c)
	}
	storePath := filepath.Join(ts.cfg.StateDir, "chunks", sha(zst)+".btyc")
	fi, err := os.Stat(storePath)
	if err != nil || fi.Size() != c.SizeBytes {
		t.Fatalf("store file: %v, %v (catalog says %d bytes)", fi, err, c.SizeBytes)
	}

	// The header with a Range request, then the whole file.
	r := ts.do(t, "GET", "/images/disk.img.zst/chunks", nil, map[string]string{"Range": fmt.Sprintf("bytes=0-%d", chunks.HeaderSize-1)})
	if r.code != 206 || len(r.body) != chunks.HeaderSize || r.header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("range: %d %q %d bytes", r.code, r.header.Get("Content-Type"), len(r.body))
	}
	x, n, err := chunks.ParseHeader(r.body)
	if err != nil || n != 4 || x.SHA256 != *e.DecodedSHA256 || x.ImageSize != int64(len(raw)) || x.SourceSHA256 != sha(zst) {
		t.Fatalf("header: %+v %d %v", x, n, err)
	}
	etag := r.header.Get("ETag")
	if !strings.HasPrefix(etag, `"`+sha(zst)) {
		t.Errorf("ETag %q does not carry the file's sha256", etag)
	}
	r = ts.do(t, "GET", "/images/disk.img.zst/chunks", nil, nil)
	if r.code != 200 || int64(len(r.body)) != c.SizeBytes {
		t.Fatalf("whole store: %d, %d bytes", r.code, len(r.body))
	}
	x, img := decodeStore(t, r.body)
	if got := sha(img); got != *e.DecodedSHA256 || x.SHA256 != got {
		t.Fatalf("decoded store: sha256 %s, index %s, catalog %s", got, x.SHA256, *e.DecodedSHA256)
	}
	if !x.Chunks[1].Zero || !x.Chunks[0].Raw || x.Chunks[2].Zero || x.Chunks[2].Raw {
		t.Errorf("chunk kinds: %+v", x.Chunks)
	}
	// If-Range with another ETag: the whole file, not a mix.
	r = ts.do(t, "GET", "/images/disk.img.zst/chunks", nil, map[string]string{"Range": fmt.Sprintf("bytes=0-%d", chunks.HeaderSize-1), "If-Range": `"stale"`})
	if r.code != 200 {
		t.Errorf("If-Range with a stale ETag: %d", r.code)
	}
	if r := ts.do(t, "HEAD", "/images/disk.img.zst/chunks", nil, nil); r.code != 200 || r.header.Get("Content-Length") != fmt.Sprint(fi.Size()) {
		t.Errorf("HEAD: %d %v", r.code, r.header)
	}

	metrics := string(ts.do(t, "GET", "/metrics", nil, nil).body)
	for _, want := range []string{`bty_chunk_builds_total{result="ok"} 1`, `bty_chunk_builds_total{result="failed"} 0`, "bty_chunk_stores 1", "bty_chunk_build_bytes 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(metrics, "bty_chunk"))
		}
	}
	if strings.Contains(metrics, `bty_bytes_served_total{kind="chunks"} 0`) || !strings.Contains(metrics, `bty_bytes_served_total{kind="chunks"}`) {
		t.Errorf("chunk bytes not counted:\n%s", grepLines(metrics, "bty_bytes_served"))
	}

	// The Images page shows it.
	page := ts.do(t, "GET", "/ui/images", nil, ts.auth())
	if want := "ready (" + human.Bytes(c.SizeBytes) + ", 4 chunks)"; page.code != 200 || !strings.Contains(string(page.body), want) {
		t.Errorf("Images page: %d, lacks %q", page.code, want)
	}

	// Replaced with other content: a new store, the old one removed.
	raw2 := chunkImage(t, 3<<20)
	zst2 := zstdOf(t, raw2)
	putImage(t, ts.cfg.ImageRoot, "disk.img.zst", zst2, time.Now())
	e2 := waitChunks(t, ts, "disk.img.zst", sha(zst2))
	if e2.Chunks.Chunks != 3 || *e2.DecodedSHA256 != sha(raw2) {
		t.Errorf("replaced: %+v %+v", e2, e2.Chunks)
	}
	waitGone(t, storePath)
	r = ts.do(t, "GET", "/images/disk.img.zst/chunks", nil, nil)
	if _, img := decodeStore(t, r.body); sha(img) != sha(raw2) {
		t.Error("the replaced image's store does not decode to it")
	}

	// Refused: no such image, names that escape or hide.
	if r := ts.do(t, "GET", "/images/none.img/chunks", nil, nil); r.code != 404 || !strings.Contains(r.errMsg(t), `no image "none.img"`) {
		t.Errorf("missing image: %d %s", r.code, r.body)
	}
	for _, p := range []string{"/images/..%2Fstate%2Fstate.db/chunks", "/images/.hidden.img/chunks"} {
		if r := ts.do(t, "GET", p, nil, nil); r.code != 400 {
			t.Errorf("%s: %d %s", p, r.code, r.body)
		}
	}
	outside := filepath.Join(t.TempDir(), "out.img")
	if err := os.WriteFile(outside, raw2, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(ts.cfg.ImageRoot, "link.img")); err != nil {
		t.Fatal(err)
	}
	if r := ts.do(t, "GET", "/images/link.img/chunks", nil, nil); r.code != 403 {
		t.Errorf("a link out of the root: %d %s", r.code, r.body)
	}
	os.Remove(filepath.Join(ts.cfg.ImageRoot, "link.img"))

	// Deleted: its store goes too.
	if r := ts.do(t, "DELETE", "/images/disk.img.zst", nil, ts.auth()); r.code != 204 {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	waitGone(t, filepath.Join(ts.cfg.StateDir, "chunks", sha(zst2)+".btyc"))
	if r := ts.do(t, "GET", "/images/disk.img.zst/chunks", nil, nil); r.code != 404 {
		t.Errorf("deleted image: %d", r.code)
	}
}

// TestChunkStoreRestart: a restart checks the store on disk and keeps
// it (no build); a damaged one is built again.
func TestChunkStoreRestart(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	raw := chunkImage(t, 3<<20)
	putImage(t, filepath.Join(dir, "images"), "disk.img", raw, time.Now().Add(-time.Hour))
	storePath := filepath.Join(dir, "chunks", sha(raw)+".btyc")

	builds := func(ts *testServer) string {
		return grepLines(string(ts.do(t, "GET", "/metrics", nil, nil).body), `bty_chunk_builds_total{result="ok"}`)
	}
	ts, stop := bootServer(t, dir, testPassword, nil, nil)
	waitChunks(t, ts, "disk.img", sha(raw))
	if got := builds(ts); !strings.Contains(got, "} 1") {
		t.Fatalf("first start: %s", got)
	}
	before, err := os.Stat(storePath)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	ts, stop = bootServer(t, dir, testPassword, nil, nil)
	waitChunks(t, ts, "disk.img", sha(raw))
	after, err := os.Stat(storePath)
	if err != nil || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("the store was rebuilt at restart: %v → %v (%v)", before.ModTime(), after.ModTime(), err)
	}
	if got := builds(ts); !strings.Contains(got, "} 0") {
		t.Errorf("restart: %s", got)
	}
	stop()

	// A truncated store is not served: built again.
	if err := os.Truncate(storePath, after.Size()-1); err != nil {
		t.Fatal(err)
	}
	ts, _ = bootServer(t, dir, testPassword, nil, nil)
	e := waitChunks(t, ts, "disk.img", sha(raw))
	if got := builds(ts); !strings.Contains(got, "} 1") {
		t.Errorf("restart over a damaged store: %s", got)
	}
	r := ts.do(t, "GET", "/images/disk.img/chunks", nil, nil)
	if _, img := decodeStore(t, r.body); sha(img) != *e.DecodedSHA256 {
		t.Error("the rebuilt store does not decode to the image")
	}
}

// TestChunkStoresOff: BTY_CHUNK_STORES=off builds and serves none.
func TestChunkStoresOff(t *testing.T) {
	for v, off := range map[string]bool{"": false, "on": false, "off": true} {
		c, err := ConfigFromEnv(func(k string) string {
			if k == "BTY_CHUNK_STORES" {
				return v
			}
			return ""
		})
		if err != nil || c.NoChunkStores != off {
			t.Errorf("BTY_CHUNK_STORES=%q: %v %v", v, c.NoChunkStores, err)
		}
	}
	if _, err := ConfigFromEnv(func(k string) string {
		if k == "BTY_CHUNK_STORES" {
			return "yes"
		}
		return ""
	}); err == nil || !strings.Contains(err.Error(), "want on") {
		t.Errorf("BTY_CHUNK_STORES=yes: %v", err)
	}
	ts := startServer(t, func(c *Config) { c.NoChunkStores = true })
	raw := chunkImage(t, 3<<20)
	putImage(t, ts.cfg.ImageRoot, "disk.img", raw, time.Now())
	e := waitCatalog(t, ts, "disk.img")
	if e.Chunks != nil {
		t.Errorf("chunks with chunk stores off: %+v", e.Chunks)
	}
	if r := ts.do(t, "GET", "/images/disk.img/chunks", nil, nil); r.code != 404 || !strings.Contains(r.errMsg(t), "BTY_CHUNK_STORES=off") {
		t.Errorf("off: %d %s", r.code, r.body)
	}
	if _, err := os.Stat(filepath.Join(ts.cfg.StateDir, "chunks")); !os.IsNotExist(err) {
		t.Errorf("chunk directory with chunk stores off: %v", err)
	}
}

// TestChunkStoreStale: a build whose image is not the one the catalog
// hashed (it changed meanwhile) is discarded, its state failed.
func TestChunkStoreStale(t *testing.T) {
	ts := startServer(t, nil)
	raw := chunkImage(t, 3<<20)
	putImage(t, ts.cfg.ImageRoot, "disk.img", raw, time.Now())
	// A builder of its own, without the server's sweeps.
	cs := &chunkStores{dir: t.TempDir(), root: ts.cfg.ImageRoot, cat: ts.srv.catalog, log: ts.srv.log, m: ts.srv.metrics,
		states: map[string]*chunkState{}}
	stale := strings.Repeat("0", 64)
	cs.mu.Lock()
	cs.states[stale] = &chunkState{ChunkStore: api.ChunkStore{State: chunkQueued}}
	cs.mu.Unlock()
	cs.build(t.Context(), chunkJob{name: "disk.img", file: stale, decoded: strings.Repeat("1", 64)})
	if _, err := os.Stat(cs.path(stale)); !os.IsNotExist(err) {
		t.Errorf("a stale build was kept: %v", err)
	}
	cs.mu.Lock()
	st := cs.states[stale].ChunkStore
	cs.mu.Unlock()
	if st.State != chunkFailed || !strings.Contains(st.Error, "the image changed while its chunk store was built") {
		t.Errorf("stale build's state %+v", st)
	}
}
