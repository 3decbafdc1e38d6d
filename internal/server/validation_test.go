package server

import (
	"encoding/json"
	"strings"
	"testing"

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
		{"last_known_good of 256 bytes", "last_known_good", strings.Repeat("i", 252) + ".img", "255"},
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
