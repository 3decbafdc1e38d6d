package fleet

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// FuzzProgress: whatever bytes a live env (or anyone on the
// provisioning network with a cycle's token) posts as progress or done,
// the figures that reach a flash record are in range, the name and
// sha256 well-formed, and the record still encodes as JSON (a NaN rate
// would make every later read of the machine fail).
func FuzzProgress(f *testing.F) {
	for _, s := range []string{`{}`, `{"bytes_written":1048576,"total_bytes":4194304,"rate":5.2e7}`,
		`{"bytes_written":-1,"total_bytes":1e300,"rate":-3}`, `{"image":"../../etc/passwd","sha256":"ABC"}`,
		`{"image":"a\u0000b","sha256":"` + strings.Repeat("a", 64) + `"}`, `{"rate":1e308}`, `[1,2]`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Progress
		if json.Unmarshal(b, &p) != nil {
			return
		}
		s := p.Sane()
		if s.BytesWritten < 0 || s.TotalBytes < 0 || s.Rate < 0 || math.IsNaN(s.Rate) || math.IsInf(s.Rate, 0) {
			t.Fatalf("Sane(%+v) = %+v", p, s)
		}
		if strings.ContainsAny(s.Image, "/\x00\r\n") || len(s.Image) > MaxNameBytes {
			t.Fatalf("Sane image %q", s.Image)
		}
		if s.SHA256 != "" && (len(s.SHA256) != 64 || strings.Trim(s.SHA256, "0123456789abcdef") != "") {
			t.Fatalf("Sane sha256 %q", s.SHA256)
		}
		m := flashMachine()
		m.ReadyCheck = ReadyNone
		m, _ = m.Contact(visit(ipA, t0))
		m = m.Progressed(p, t0.Add(time.Minute))
		m = m.Done(p, t0.Add(2*time.Minute))
		if _, err := json.Marshal(m); err != nil {
			t.Fatalf("the machine after %q does not encode: %v", b, err)
		}
		if m.Flash.BytesWritten < 0 || m.Flash.Rate < 0 {
			t.Fatalf("flash %+v", m.Flash)
		}
	})
}

// FuzzParseMAC: every open route starts with a MAC from the path. A
// parsed one is canonical (parsing its text again gives it back) and
// never longer than the form it was given in allows.
func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"52:54:00:12:34:56", "52-54-00-12-34-56", "AA:BB:CC:DD:EE:FF", "52:54:00:12:34", "5254.0012.3456", "", "::::::", "zz:zz:zz:zz:zz:zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMAC(s)
		if err != nil {
			return
		}
		again, err := ParseMAC(m.String())
		if err != nil || again != m {
			t.Fatalf("%q parsed to %q, which parses to %q, %v", s, m, again, err)
		}
		if len(m.String()) != 17 || strings.ToLower(m.String()) != m.String() {
			t.Fatalf("%q parsed to %q, not aa:bb:cc:dd:ee:ff", s, m)
		}
	})
}

// FuzzCheckWorkflow: any bytes uploaded as a workflow are accepted or
// refused with a *WorkflowError, never a panic; an accepted one has a
// steps list.
func FuzzCheckWorkflow(f *testing.F) {
	for _, s := range []string{"steps:\n- name: a\n  run: echo\n", "steps: []\n", "doc: x\n", "- a\n", "steps:\n- name: a\n  uses: core.x\n  with: {a: 1}\n",
		"steps: &a\n- name: a\n  run: *a\n", "!!map {steps: [{name: a, run: b}]}", "steps:\n- name: [x\n", "\xff\xfe", "---\n---\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := CheckWorkflow(b)
		if err == nil {
			if !strings.Contains(string(b), "steps") {
				t.Fatalf("accepted a workflow without steps: %q", b)
			}
			return
		}
		if _, ok := err.(*WorkflowError); !ok {
			t.Fatalf("error of type %T: %v", err, err)
		}
	})
}
