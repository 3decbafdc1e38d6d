package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// TestBulk: a bulk action changes exactly the machines its selector
// picks, reports each one's outcome (a busy machine's refusal beside
// the others' success), and a request without a selector, with an
// unknown action, or with a host name for many machines changes nothing.
func TestBulk(t *testing.T) {
	ts := startServer(t, nil)
	ts.addImage(t, "job.img")
	macs := map[string]string{"52:54:00:b0:00:01": "ci", "52:54:00:b0:00:02": "ci", "52:54:00:b0:00:03": "build"}
	for mac, role := range macs {
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"boot_policy":"local","labels":{"role":"`+role+`"}}`), ts.auth()); r.code != 201 {
			t.Fatal(r.code)
		}
	}
	bulk := func(req api.BulkRequest) (resp, api.BulkResult) {
		t.Helper()
		b, _ := json.Marshal(req)
		r := ts.do(t, "POST", "/machines/bulk", strings.NewReader(string(b)), ts.auth())
		var res api.BulkResult
		if r.code == 200 {
			r.json(t, &res)
		}
		return r, res
	}
	img, host, pol := "job.img", "same-for-all", fleet.PolicyFlash
	for _, c := range []struct {
		req  api.BulkRequest
		want string
	}{
		{api.BulkRequest{Action: "reflash"}, "selector: required"},
		{api.BulkRequest{Selector: "role in ci", Action: "reflash"}, "selector"},
		{api.BulkRequest{Selector: "role=ci", Action: "explode"}, "action"},
		{api.BulkRequest{Selector: "role=ci", Action: "set"}, "update"},
		{api.BulkRequest{Selector: "role=ci", Action: "set", Update: &fleet.MachineUpdate{Hostname: &host}}, "host name belongs to one machine"},
		{api.BulkRequest{Selector: "role=ci", Action: "power", Power: "explode"}, "power"},
	} {
		if r, _ := bulk(c.req); r.code != 400 || !strings.Contains(r.errMsg(t), c.want) {
			t.Errorf("%+v: %d %s, want 400 with %q", c.req, r.code, r.body, c.want)
		}
	}
	r, res := bulk(api.BulkRequest{Selector: "role=ci", Action: "set", Update: &fleet.MachineUpdate{Image: &img, BootPolicy: &pol}})
	if r.code != 200 || res.Matched != 2 || res.OK != 2 || res.Failed != 0 {
		t.Fatalf("bulk set: %d %s", r.code, r.body)
	}
	for mac, role := range macs {
		m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac))
		if changed := m.Image == "job.img" && m.BootPolicy == fleet.PolicyFlash; changed != (role == "ci") {
			t.Errorf("%s (role %s): image %q policy %q", mac, role, m.Image, m.BootPolicy)
		}
	}
	// One ci machine is busy: the other is reflashed, the busy one's
	// item says why.
	if r := ts.do(t, "POST", "/machines/52:54:00:b0:00:01/reflash", nil, ts.auth()); r.code != 202 {
		t.Fatalf("reflash: %d", r.code)
	}
	r, res = bulk(api.BulkRequest{Selector: "role=ci", Action: "reflash"})
	if r.code != 200 || res.Matched != 2 || res.OK != 1 || res.Failed != 1 {
		t.Fatalf("bulk reflash: %d %s", r.code, r.body)
	}
	for _, it := range res.Results {
		switch it.MAC.String() {
		case "52:54:00:b0:00:01":
			if !strings.Contains(it.Error, "in progress") {
				t.Errorf("the busy machine: %+v", it)
			}
		case "52:54:00:b0:00:02":
			if it.Error != "" || it.FlashID == 0 || !strings.Contains(it.Note, "no power driver") {
				t.Errorf("the free machine: %+v", it)
			}
			if f := ts.flashOf(t, it.MAC.String(), it.FlashID); f.Trigger != fleet.TriggerDemand || f.Image != "job.img" {
				t.Errorf("its flash: %+v", f)
			}
		default:
			t.Errorf("bulk reflash touched %s", it.MAC)
		}
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC("52:54:00:b0:00:03")); m.Flash != nil {
		t.Error("the build machine was reflashed")
	}
	// Power without a driver: each item says so; clear: nothing to.
	r, res = bulk(api.BulkRequest{Selector: "role=build", Action: "power", Power: "status"})
	if r.code != 200 || res.Failed != 1 || !strings.Contains(res.Results[0].Error, "no power driver") {
		t.Errorf("bulk power: %d %s", r.code, r.body)
	}
	r, res = bulk(api.BulkRequest{Selector: "role", Action: "clear"})
	if r.code != 200 || res.Matched != 3 || res.OK != 3 || res.Results[0].Note != "nothing to clear" {
		t.Errorf("bulk clear: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "POST", "/machines/bulk", nil, nil); r.code != 401 {
		t.Errorf("bulk without a login: %d", r.code)
	}
}

// TestUIBulkReflash: the machine table's bulk form reflashes the ticked
// machines and reports those that refused.
func TestUIBulkReflash(t *testing.T) {
	ts := startServer(t, nil)
	ts.addImage(t, "job.img")
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	const a, b = "52:54:00:b0:01:01", "52:54:00:b0:01:02"
	if r := ts.do(t, "PUT", "/machines/"+a, strings.NewReader(`{"image":"job.img"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	if r := ts.do(t, "PUT", "/machines/"+b, strings.NewReader(`{"boot_policy":"local"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	res := ts.form(t, "/ui/machines/bulk", url.Values{"mac": {a, b}, "action": {"reflash"}}, cookie)
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("bulk reflash: %d", res.StatusCode)
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(a)); m.Flash == nil || m.Flash.Trigger != fleet.TriggerDemand {
		t.Fatalf("a was not reflashed: %+v", m.Flash)
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(b)); m.Flash != nil {
		t.Fatal("b has no image and must not have a flash")
	}
	page := string(ts.do(t, "GET", "/ui/machines", nil, map[string]string{"Cookie": res.Header.Get("Set-Cookie") + "; " + cookie["Cookie"]}).body)
	if !strings.Contains(page, "Requested a reflash on 1 machine.") || !strings.Contains(page, b+" (") {
		t.Errorf("the outcome is not shown")
	}
}
