package server

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/api"
)

// TestLinksOutOfRootsNotServed (issue 17, item 13): a symbolic link in
// the image root or the boot directory that leads out of it (here to
// state.db) is never served; GET /images lists it with the reason; a
// relative link to a file inside still works.
func TestLinksOutOfRootsNotServed(t *testing.T) {
	ts := startServer(t, nil)
	db := ts.cfg.DBPath()
	secret := filepath.Join(t.TempDir(), "secret.img")
	if err := os.WriteFile(secret, []byte("SECRET BYTES outside the image root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	inside := randomBytes(t, 8192)
	if err := os.WriteFile(filepath.Join(ts.cfg.ImageRoot, "real.img"), inside, 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		filepath.Join(ts.cfg.ImageRoot, "db.img"):               db,
		filepath.Join(ts.cfg.ImageRoot, "secret.img"):           secret,
		filepath.Join(ts.cfg.ImageRoot, "alias.img"):            "real.img",
		filepath.Join(ts.cfg.BootDir, "bty-live-x86_64.initrd"): db,
	}
	for l, target := range links {
		if err := os.Symlink(target, l); err != nil {
			t.Fatal(err)
		}
	}

	for _, p := range []string{"/images/db.img", "/images/secret.img", "/boot/bty-live-x86_64.initrd"} {
		r := ts.do(t, "GET", p, nil, nil)
		if r.code != http.StatusForbidden {
			t.Errorf("GET %s: %d, want 403", p, r.code)
		}
		if strings.Contains(string(r.body), "SQLite format") || strings.Contains(string(r.body), "SECRET") {
			t.Errorf("GET %s served the file outside the root", p)
		}
		if msg := r.errMsg(t); !strings.Contains(msg, "a link out of the") {
			t.Errorf("GET %s: error %q does not say it is a link out of the directory", p, msg)
		}
	}
	if r := ts.do(t, "GET", "/images/alias.img", nil, nil); r.code != http.StatusOK || string(r.body) != string(inside) {
		t.Errorf("GET /images/alias.img (a link inside the root): %d, %d bytes; want 200 and real.img's bytes", r.code, len(r.body))
	}

	r := ts.do(t, "GET", "/images", nil, nil)
	var list []api.Image
	r.json(t, &list)
	got := map[string]api.Image{}
	for _, e := range list {
		got[e.Name] = e
	}
	for _, n := range []string{"db.img", "secret.img"} {
		e, ok := got[n]
		if !ok {
			t.Errorf("GET /images does not list %s: %s", n, r.body)
			continue
		}
		if !strings.Contains(e.Error, "a link out of the images directory") || e.SizeBytes != 0 || e.SHA256 != nil {
			t.Errorf("GET /images: %s = %+v; want it unusable, with the reason and nothing read", n, e)
		}
	}
	if e := waitCatalog(t, ts, "alias.img"); e.Error != "" || e.SizeBytes != int64(len(inside)) {
		t.Errorf("alias.img (a link inside the root) = %+v; want a usable image", e)
	}

	r = ts.do(t, "GET", "/boot", nil, nil)
	var boot []api.BootFile
	r.json(t, &boot)
	for _, f := range boot {
		if f.Name == "bty-live-x86_64.initrd" && f.Present {
			t.Errorf("GET /boot: the link out of the boot directory is listed as present: %+v", f)
		}
	}
}
