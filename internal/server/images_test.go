package server

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
)

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// compress runs a real compressor over b.
func compress(t *testing.T, tool string, b []byte) []byte {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("needs %s", tool)
	}
	// From a file, so that zstd records the content size.
	in := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "-c", in).Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return out
}

// waitCatalog polls GET /images until name has its hashes.
func waitCatalog(t *testing.T, ts *testServer, name string) api.Image {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var list []api.Image
		ts.do(t, "GET", "/images", nil, nil).json(t, &list)
		for _, e := range list {
			if e.Name == name && e.SHA256 != nil && e.DecodedSHA256 != nil {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not hashed in the catalog after 20 s: %+v", name, list)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(dir, ".bty-upload-*"))
	if len(left) > 0 {
		t.Errorf("upload temp files left: %v", left)
	}
}

func TestImageUploadAndCatalog(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxUpload = 8 << 20 })
	h := ts.auth()
	raw := randomBytes(t, 3<<20)
	zst := compress(t, "zstd", raw)
	gz := compress(t, "gzip", raw)

	// A raw image with its sha256: 201, listed, hashed.
	r := ts.do(t, "PUT", "/images/disk.img?sha256="+sha(raw), bytes.NewReader(raw), h)
	if r.code != 201 {
		t.Fatalf("upload raw: %d %s", r.code, r.body)
	}
	e := waitCatalog(t, ts, "disk.img")
	if e.Format != "raw" || e.SizeBytes != int64(len(raw)) || *e.SHA256 != sha(raw) || *e.DecodedSHA256 != sha(raw) {
		t.Errorf("raw entry %+v", e)
	}
	// zst: the decoded hash is the raw image's.
	if r := ts.do(t, "PUT", "/images/disk.img.zst", bytes.NewReader(zst), map[string]string{
		"Authorization": h["Authorization"], "X-Checksum-Sha256": sha(zst)}); r.code != 201 {
		t.Fatalf("upload zst: %d %s", r.code, r.body)
	}
	e = waitCatalog(t, ts, "disk.img.zst")
	if e.Format != "zst" || *e.SHA256 != sha(zst) || *e.DecodedSHA256 != sha(raw) || e.VirtualSizeBytes == nil || *e.VirtualSizeBytes != int64(len(raw)) {
		t.Errorf("zst entry %+v", e)
	}
	// Replacing answers 200.
	if r := ts.do(t, "PUT", "/images/disk.img", bytes.NewReader(raw), h); r.code != 200 {
		t.Errorf("replace: %d %s", r.code, r.body)
	}

	refused := []struct {
		name, path string
		body       []byte
		code       int
		want       string
	}{
		{"lying suffix", "/images/other.img.zst", gz, 400, "is gz data but its name"},
		{"raw named zst", "/images/other.img.zst", raw, 400, "raw (no known magic) data"},
		{"no suffix", "/images/other.bin", raw, 400, "no image suffix"},
		{"traversal", "/images/..%2Fescape.img", raw, 400, "path separator"},
		{"hidden", "/images/.sneaky.img", raw, 400, "starts with a dot"},
		{"sha mismatch", "/images/other.img?sha256=" + strings.Repeat("0", 64), raw, 400, "sha256 mismatch"},
		{"bad sha", "/images/other.img?sha256=xyz", raw, 400, "not 64 hexadecimal"},
		{"empty", "/images/other.img", nil, 400, "empty"},
		{"too large", "/images/other.img", randomBytes(t, 9<<20), 413, "limit"},
		{"bad qcow2", "/images/other.qcow2", append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 4096)...), 400, "not a usable qcow2"},
		// A VMDK named as a raw image: refused, with the conversion.
		{"vmdk as raw", "/images/other.img", append([]byte("KDMV\x01\x00\x00\x00"), make([]byte, 4096)...), 400, "qemu-img convert -f vmdk"},
	}
	for _, c := range refused {
		r := ts.do(t, "PUT", c.path, bytes.NewReader(c.body), h)
		if r.code != c.code || !strings.Contains(r.errMsg(t), c.want) {
			t.Errorf("%s: %d %s; want %d with %q", c.name, r.code, r.body, c.code, c.want)
		}
	}
	// Without Content-Length (chunked), the cap still holds.
	pr, pw := io.Pipe()
	go func() {
		pw.Write(randomBytes(t, 9<<20))
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", ts.URL+"/images/chunked.img", pr)
	req.Header.Set("Authorization", h["Authorization"])
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 413 {
		t.Errorf("chunked oversize: %v %v", res.StatusCode, err)
	}
	noTempFiles(t, ts.cfg.ImageRoot)
	var list []api.Image
	ts.do(t, "GET", "/images", nil, nil).json(t, &list)
	if len(list) != 2 {
		t.Errorf("catalog after refusals: %+v", list)
	}
	// A VMDK copied into the image root is listed with the reason it
	// cannot be flashed, not hidden and not offered as raw.
	vmdk := append([]byte("KDMV\x01\x00\x00\x00"), make([]byte, 4096)...)
	if err := os.WriteFile(filepath.Join(ts.cfg.ImageRoot, "appliance.vmdk"), vmdk, 0o644); err != nil {
		t.Fatal(err)
	}
	list = nil
	ts.do(t, "GET", "/images", nil, nil).json(t, &list)
	found := false
	for _, e := range list {
		if e.Name == "appliance.vmdk" {
			found = e.Format == "vmdk" && strings.Contains(e.Error, "qemu-img convert")
		}
	}
	if !found {
		t.Errorf("catalog with a VMDK: %+v; want it listed as vmdk with the reason", list)
	}
	os.Remove(filepath.Join(ts.cfg.ImageRoot, "appliance.vmdk"))
	// A corrupt qcow2's reason names the image, not where the server
	// keeps it (GET /images is open to the PXE network).
	bad := append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 4096)...)
	if err := os.WriteFile(filepath.Join(ts.cfg.ImageRoot, "broken.qcow2"), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	list = nil
	ts.do(t, "GET", "/images", nil, nil).json(t, &list)
	for _, e := range list {
		if e.Name == "broken.qcow2" && (e.Error == "" || strings.Contains(e.Error, ts.cfg.ImageRoot)) {
			t.Errorf("broken.qcow2's reason %q is empty or shows the image root %s", e.Error, ts.cfg.ImageRoot)
		}
	}
	os.Remove(filepath.Join(ts.cfg.ImageRoot, "broken.qcow2"))

	// Bytes, ranges, If-Range, HEAD.
	r = ts.do(t, "GET", "/images/disk.img", nil, nil)
	if r.code != 200 || !bytes.Equal(r.body, raw) || r.header.Get("ETag") == "" {
		t.Fatalf("GET: %d, %d bytes", r.code, len(r.body))
	}
	etag := r.header.Get("ETag")
	r = ts.do(t, "GET", "/images/disk.img", nil, map[string]string{"Range": "bytes=1000-1999", "If-Range": etag})
	if r.code != 206 || !bytes.Equal(r.body, raw[1000:2000]) {
		t.Errorf("Range with matching If-Range: %d, %d bytes", r.code, len(r.body))
	}
	r = ts.do(t, "GET", "/images/disk.img", nil, map[string]string{"Range": "bytes=1000-1999", "If-Range": `"stale"`})
	if r.code != 200 || len(r.body) != len(raw) {
		t.Errorf("Range with a stale If-Range: %d, %d bytes (want the whole file)", r.code, len(r.body))
	}
	if r := ts.do(t, "GET", "/images/disk.img", nil, map[string]string{"If-None-Match": etag}); r.code != 304 {
		t.Errorf("If-None-Match: %d", r.code)
	}
	if r := ts.do(t, "HEAD", "/images/disk.img", nil, nil); r.code != 200 || r.header.Get("Content-Length") != "3145728" {
		t.Errorf("HEAD: %d %v", r.code, r.header)
	}
	if r := ts.do(t, "GET", "/images/missing.img", nil, nil); r.code != 404 {
		t.Errorf("missing: %d", r.code)
	}
	if r := ts.do(t, "GET", "/images/..%2F..%2Fetc%2Fpasswd", nil, nil); r.code != 400 {
		t.Errorf("traversal GET: %d", r.code)
	}
	metrics := string(ts.do(t, "GET", "/metrics", nil, nil).body)
	if !strings.Contains(metrics, `bty_bytes_served_total{kind="image"} 6.292456e+06`) {
		t.Errorf("bytes served metric (3 MiB + 3 MiB + 1000 bytes expected):\n%s", grepLines(metrics, "bytes_served"))
	}

	if r := ts.do(t, "DELETE", "/images/disk.img", nil, h); r.code != 204 {
		t.Errorf("delete: %d", r.code)
	}
	if r := ts.do(t, "DELETE", "/images/disk.img", nil, h); r.code != 404 {
		t.Errorf("delete again: %d", r.code)
	}
	if _, err := os.Stat(filepath.Join(ts.cfg.ImageRoot, "disk.img")); err == nil {
		t.Error("deleted image still on disk")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestBootArtifacts(t *testing.T) {
	ts := startServer(t, nil)
	kernel := randomBytes(t, 100000)
	if r := ts.do(t, "PUT", "/boot/bty-live-x86_64.vmlinuz", bytes.NewReader(kernel), ts.auth()); r.code != 201 {
		t.Fatalf("upload: %d %s", r.code, r.body)
	}
	var files []api.BootFile
	ts.do(t, "GET", "/boot", nil, nil).json(t, &files)
	if len(files) != 2 || !files[0].Present || files[0].SizeBytes != 100000 || files[1].Present || !files[1].Required {
		t.Errorf("boot list %+v", files)
	}
	if r := ts.do(t, "GET", "/boot/bty-live-x86_64.vmlinuz", nil, nil); r.code != 200 || !bytes.Equal(r.body, kernel) {
		t.Errorf("GET boot: %d", r.code)
	}
	if r := ts.do(t, "PUT", "/boot/..%2Fstate.db", bytes.NewReader(kernel), ts.auth()); r.code != 400 {
		t.Errorf("traversal PUT: %d", r.code)
	}
	if r := ts.do(t, "PUT", "/boot/x", bytes.NewReader(kernel), nil); r.code != 401 {
		t.Errorf("unauthenticated PUT: %d", r.code)
	}
	noTempFiles(t, ts.cfg.BootDir)
}
