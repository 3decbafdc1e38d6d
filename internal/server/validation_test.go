package server

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/btyproject/bty/internal/fleet"
)

// TestMachinePutBounds: every string field of PUT /machines has a
// bound; past it the answer is 400 naming the field and the limit, and
// nothing is stored (neither a new record nor a change to an old one).
func TestMachinePutBounds(t *testing.T) {
	ts := startServer(t, nil)
	h := ts.auth()
	const known = "/machines/52:54:00:00:00:40"
	if r := ts.do(t, "PUT", known, strings.NewReader(`{"hostname":"kept","cijoe_workflow_ref":"wf.yaml"}`), h); r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	before := ts.do(t, "GET", known, nil, h).body
	tests := []struct {
		name, field string
		value       string
		want        string // in the message, besides the field
	}{
		{"cijoe_workflow_ref of 3.9 MB", "cijoe_workflow_ref", strings.Repeat("w", 3900*1000), "the limit is 1024"},
		{"cijoe_workflow_ref of 1025 bytes", "cijoe_workflow_ref", strings.Repeat("w", 1025), "the limit is 1024"},
		{"cijoe_workflow_ref of two lines", "cijoe_workflow_ref", "a.yaml\nb: c", "one line"},
		{"image of 256 bytes", "image", strings.Repeat("i", 252) + ".img", "255"},
		{"hostname of 254 bytes", "hostname", strings.Repeat("a.", 127), "253"},
		{"user_data over 1 MiB", "user_data", "#cloud-config\n#" + strings.Repeat("x", fleet.MaxSeedBytes), "the limit is 1048576"},
		{"meta_data over 1 MiB", "meta_data", "#" + strings.Repeat("x", fleet.MaxSeedBytes), "the limit is 1048576"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := json.Marshal(map[string]string{tt.field: tt.value})
			if err != nil {
				t.Fatal(err)
			}
			for _, path := range []string{known, "/machines/52:54:00:00:00:41"} {
				r := ts.do(t, "PUT", path, strings.NewReader(string(body)), h)
				if r.code != 400 {
					t.Fatalf("PUT %s: %d %.200s, want 400", path, r.code, r.body)
				}
				if msg := r.errMsg(t); !strings.HasPrefix(msg, tt.field+":") || !strings.Contains(msg, tt.want) || len(msg) > 2000 {
					t.Errorf("PUT %s: message %.300q, want it to start with %q and say %q (and not echo the value)", path, msg, tt.field+":", tt.want)
				}
			}
			if r := ts.do(t, "GET", "/machines/52:54:00:00:00:41", nil, h); r.code != 404 {
				t.Errorf("a refused PUT created a record: %d %.200s", r.code, r.body)
			}
			if after := ts.do(t, "GET", known, nil, h).body; string(after) != string(before) {
				t.Errorf("a refused PUT changed the record:\n%.300s\nwas\n%.300s", after, before)
			}
		})
	}
	// At the bounds, the values are accepted.
	ok, _ := json.Marshal(map[string]string{"cijoe_workflow_ref": strings.Repeat("w", 1024), "hostname": strings.Repeat("a", 63) + ".b"})
	if r := ts.do(t, "PUT", known, strings.NewReader(string(ok)), h); r.code != 200 {
		t.Errorf("values at their bounds: %d %.300s", r.code, r.body)
	}
}

// TestImportChecksLikePut: POST /state/import refuses, whole, an archive
// with a record PUT /machines would refuse, naming the machine and the
// field; neither the good record nor the bad one is stored.
func TestImportChecksLikePut(t *testing.T) {
	ts := startServer(t, nil)
	h := ts.auth()
	const goodMAC, badMAC = "52:54:00:00:00:50", "52:54:00:00:00:51"
	good := fleet.Machine{Image: "debian.img", Hostname: "good", BootPolicy: fleet.PolicyFlash,
		ProvisioningMode: fleet.ModeCloudInit, UserData: "#cloud-config\nhostname: good\n"}
	good.MAC, _ = fleet.ParseMAC(goodMAC)
	tests := []struct {
		name, field string
		bad         func(*fleet.Machine)
	}{
		{"hostname with a newline (an extra meta-data key)", "hostname", func(m *fleet.Machine) { m.Hostname = "h\nextra-key: injected" }},
		{"image that climbs out of the root", "image", func(m *fleet.Machine) { m.Image = "../../etc/passwd" }},
		{"last_known_good with a separator", "last_known_good", func(m *fleet.Machine) { m.LastKnownGood = &fleet.KnownGood{Image: "a/b.img"} }},
		{"last_known_good with a bad hash", "last_known_good", func(m *fleet.Machine) {
			m.LastKnownGood = &fleet.KnownGood{Image: "a.img", RunID: 3, ImageSHA256: "nothex"}
		}},
		{"user-data that is not YAML", "user_data", func(m *fleet.Machine) { m.UserData = "#cloud-config\nusers: [unclosed\n" }},
		{"meta-data that is not YAML", "meta_data", func(m *fleet.Machine) { m.MetaData = "instance-id: [x\n" }},
		{"user-data of 1.5 MB", "user_data", func(m *fleet.Machine) { m.UserData = "#cloud-config\n#" + strings.Repeat("x", 1500*1000) }},
		{"cijoe_workflow_ref of two lines", "cijoe_workflow_ref", func(m *fleet.Machine) { m.CijoeWorkflowRef = "a.yaml\nb" }},
		{"cijoe_workflow_ref over 1024 bytes", "cijoe_workflow_ref", func(m *fleet.Machine) { m.CijoeWorkflowRef = strings.Repeat("w", 2000) }},
		{"unknown boot policy", "boot_policy", func(m *fleet.Machine) { m.BootPolicy = "sometimes" }},
		{"last_seen_ip of two lines", "last_seen_ip", func(m *fleet.Machine) { m.LastSeenIP = "10.0.0.1\nx" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := good
			bad.MAC, _ = fleet.ParseMAC(badMAC)
			tt.bad(&bad)
			t.Cleanup(func() { // each case starts from an empty fleet
				ts.do(t, "DELETE", "/machines/"+goodMAC, nil, h)
				ts.do(t, "DELETE", "/machines/"+badMAC, nil, h)
			})
			archive, err := json.Marshal(map[string]any{"format": archiveFormat, "machines": []fleet.Machine{good, bad}})
			if err != nil {
				t.Fatal(err)
			}
			r := ts.do(t, "POST", "/state/import", strings.NewReader(string(archive)), h)
			if r.code != 400 {
				t.Fatalf("import: %d %.300s, want 400", r.code, r.body)
			}
			if msg := r.errMsg(t); !strings.Contains(msg, "nothing imported") || !strings.Contains(msg, badMAC) || !strings.Contains(msg, tt.field) {
				t.Errorf("message %.300q: want it to say nothing was imported and name %s and %s", msg, badMAC, tt.field)
			}
			var ms []fleet.Machine
			ts.do(t, "GET", "/machines", nil, h).json(t, &ms)
			if len(ms) != 0 {
				t.Errorf("a refused import stored %d records: %v", len(ms), ms)
			}
		})
	}
	// The good record alone is imported: the refusals were the bad one's.
	archive, _ := json.Marshal(map[string]any{"format": archiveFormat, "machines": []fleet.Machine{good}})
	if r := ts.do(t, "POST", "/state/import", strings.NewReader(string(archive)), h); r.code != 200 {
		t.Errorf("the good record alone: %d %.300s", r.code, r.body)
	}
}

// TestImageNamesDisplayAsTheyAre: names that would display as something
// else (bidi overrides, invisible or control characters, white space at
// an end, invalid UTF-8) are refused on upload and as a machine's
// image; names in any script are accepted; a file already in the root
// under such a name is listed as unusable, with the reason.
func TestImageNamesDisplayAsTheyAre(t *testing.T) {
	ts := startServer(t, nil)
	h := ts.auth()
	body := randomBytes(t, 64<<10)
	bad := []struct{ name, want string }{
		{"evil\u202egpj.img", "U+202E"},            // right-to-left override: shows as "evilgmi.jpg"
		{"\u202adebian.img", "U+202A"},             // left-to-right embedding
		{"debian\u2066.img", "U+2066"},             // left-to-right isolate
		{"debian\u2069.img", "U+2069"},             // pop directional isolate
		{"deb\u200eian.img", "U+200E"},             // left-to-right mark
		{"deb\u200fian.img", "U+200F"},             // right-to-left mark
		{"deb\u061cian.img", "U+061C"},             // Arabic letter mark
		{"deb\u200bian.img", "U+200B"},             // zero-width space (format)
		{"deb\ufeffian.img", "U+FEFF"},             // byte-order mark (format)
		{" debian.img", "starts with white space"}, // leading space
		{"\u00a0debian.img", "starts with white space"},
		{"debian.img ", "ends with white space"},
		{"debian.img\t", "ends with white space"},
		{"deb\nian.img", "U+000A"},
		{"deb\x1bian.img", "U+001B"},
		{"deb\u0085ian.img", "U+0085"},
		{"deb\u2028ian.img", "U+2028"},
		{"deb\xffian.img", "not valid UTF-8"},
	}
	for _, tt := range bad {
		r := ts.do(t, "PUT", "/images/"+url.PathEscape(tt.name), bytes.NewReader(body), h)
		if r.code != 400 || !strings.Contains(r.errMsg(t), tt.want) {
			t.Errorf("PUT /images/%q: %d %s, want 400 saying %q", tt.name, r.code, r.body, tt.want)
		}
		if !utf8.ValidString(tt.name) {
			continue // JSON cannot carry it: encoding/json makes it U+FFFD
		}
		mb, _ := json.Marshal(map[string]string{"image": tt.name})
		if r := ts.do(t, "PUT", "/machines/52:54:00:00:00:60", bytes.NewReader(mb), h); r.code != 400 || !strings.Contains(r.errMsg(t), "image") {
			t.Errorf("PUT /machines image %q: %d %s, want 400 naming image", tt.name, r.code, r.body)
		}
	}
	if left, _ := os.ReadDir(ts.cfg.ImageRoot); len(left) != 0 {
		t.Errorf("refused uploads left files: %v", left)
	}
	for _, name := range []string{"débian-ü.img", "日本語.img", "Ελληνικά.img", "my image.img", "עברית.img"} {
		if r := ts.do(t, "PUT", "/images/"+url.PathEscape(name), bytes.NewReader(body), h); r.code != 201 {
			t.Errorf("PUT /images/%q: %d %s, want 201", name, r.code, r.body)
		}
	}
	// A file put in the root by hand under such a name is listed as
	// unusable, with the reason.
	const planted = "evil\u202egpj.img"
	if err := os.WriteFile(filepath.Join(ts.cfg.ImageRoot, planted), body, 0o644); err != nil {
		t.Fatal(err)
	}
	var list []struct {
		Name, Error string
	}
	ts.do(t, "GET", "/images", nil, nil).json(t, &list)
	found := false
	for _, e := range list {
		switch {
		case e.Name == planted:
			found = true
			if !strings.Contains(e.Error, "U+202E") || !strings.Contains(e.Error, "rename") {
				t.Errorf("catalog entry for %q: error %q, want the reason and what to do", planted, e.Error)
			}
		case e.Error != "":
			t.Errorf("catalog entry %q: unexpected error %q", e.Name, e.Error)
		}
	}
	if !found || len(list) != 6 {
		t.Errorf("catalog %+v: want the 5 uploads and %q", list, planted)
	}
}
