package fleet

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPowerWriteOnly(t *testing.T) {
	s := func(v string) *string { return &v }
	p := PowerUpdate{Driver: s("ipmi"), Address: s("10.0.0.9"), Username: s("admin"), Password: s("Sekrit-1")}.Apply(nil)
	if p == nil || p.Password != "Sekrit-1" || p.Address != "10.0.0.9" {
		t.Fatalf("Apply: %+v", p)
	}
	b, err := json.Marshal(Machine{MAC: testMAC, Power: p})
	if err != nil || strings.Contains(string(b), "Sekrit-1") || !strings.Contains(string(b), `"password_set":true`) {
		t.Fatalf("encoded: %s %v", b, err)
	}
	// An empty password keeps the stored one; other fields change.
	q := PowerUpdate{Password: s(""), Address: s("10.0.0.10")}.Apply(p)
	if q.Password != "Sekrit-1" || q.Address != "10.0.0.10" || p.Address != "10.0.0.9" {
		t.Fatalf("update: %+v (before %+v)", q, p)
	}
	if (PowerUpdate{Driver: s(DriverNone)}).Apply(q) != nil {
		t.Error("driver none keeps power control")
	}
	// Decoded from the wire (no password), re-encoded: still set.
	var m Machine
	if err := json.Unmarshal(b, &m); err != nil || m.Power.Password != "" || !m.Power.PasswordSet {
		t.Fatalf("decoded %+v %v", m.Power, err)
	}
	if b2, _ := json.Marshal(m); !strings.Contains(string(b2), `"password_set":true`) {
		t.Errorf("re-encoded: %s", b2)
	}
}
