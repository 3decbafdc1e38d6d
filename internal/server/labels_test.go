package server

import (
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/fleet"
)

// TestLabelsAPI: labels are set and removed as a merge patch, checked
// with Kubernetes' rules (nothing stored on a bad one), and GET
// /machines filters by a selector (a bad one is a 400 naming it).
func TestLabelsAPI(t *testing.T) {
	ts := startServer(t, nil)
	put := func(mac, body string) resp {
		t.Helper()
		return ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth())
	}
	const a, b = "52:54:00:1a:be:01", "52:54:00:1a:be:02"
	if r := put(a, `{"labels":{"role":"ci","rack":"r1","gpu":"a100"}}`); r.code != 201 {
		t.Fatalf("PUT a: %d %s", r.code, r.body)
	}
	if r := put(b, `{"labels":{"role":"ci","rack":"r3"}}`); r.code != 201 {
		t.Fatalf("PUT b: %d %s", r.code, r.body)
	}
	var m fleet.Machine
	r := put(a, `{"labels":{"gpu":null,"rack":"r2"}}`)
	r.json(t, &m)
	if r.code != 200 || m.Labels.String() != "rack=r2,role=ci" {
		t.Fatalf("merge patch: %d %v", r.code, m.Labels)
	}
	for _, bad := range []string{`{"labels":{"ro le":"ci"}}`, `{"labels":{"role":"c i"}}`, `{"labels":{"role":"` + strings.Repeat("v", 64) + `"}}`, `{"labels":{"":"x"}}`} {
		if r := put(a, bad); r.code != 400 || !strings.Contains(r.errMsg(t), "label") {
			t.Errorf("PUT %s: %d %s, want 400 naming the label", bad, r.code, r.body)
		}
	}
	ts.do(t, "GET", "/machines/"+a, nil, ts.auth()).json(t, &m)
	if m.Labels.String() != "rack=r2,role=ci" {
		t.Errorf("a bad label changed the record: %v", m.Labels)
	}
	list := func(sel string) string {
		t.Helper()
		var ms []fleet.Machine
		r := ts.do(t, "GET", "/machines?selector="+sel, nil, ts.auth())
		if r.code != 200 {
			t.Fatalf("GET ?selector=%s: %d %s", sel, r.code, r.body)
		}
		r.json(t, &ms)
		var out []string
		for _, m := range ms {
			out = append(out, m.MAC.String())
		}
		return strings.Join(out, " ")
	}
	if got := list("role%3Dci,rack!%3Dr3"); got != a {
		t.Errorf("role=ci,rack!=r3: %q, want %s", got, a)
	}
	if got := list("rack+in+(r2,r3)"); got != a+" "+b {
		t.Errorf("rack in (r2,r3): %q", got)
	}
	if r := ts.do(t, "GET", "/machines?selector=rack+in+r2", nil, ts.auth()); r.code != 400 || !strings.Contains(r.errMsg(t), "selector") {
		t.Errorf("a bad selector: %d %s", r.code, r.body)
	}
}

// TestUILabels: the machine form sets labels (one key=value per line;
// a line left out removes that label), refuses a bad one at its field
// with the text kept and nothing saved, and the machine table filters
// by a selector (a bad one is said, not applied).
func TestUILabels(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	const a, b = "52:54:00:1a:be:0a", "52:54:00:1a:be:0b"
	for mac, body := range map[string]string{a: `{"labels":{"role":"ci","old":"x"}}`, b: `{"labels":{"role":"build"}}`} {
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth()); r.code != 201 {
			t.Fatal(r.code)
		}
	}
	form := func(labels string) url.Values {
		return url.Values{"image": {""}, "provisioning_mode": {"none"}, "hostname": {""}, "cijoe_workflow_ref": {""},
			"boot_policy": {"local"}, "labels": {labels}}
	}
	labelsOf := func(mac string) string {
		m, err := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac))
		if err != nil {
			t.Fatal(err)
		}
		return m.Labels.String()
	}
	for _, bad := range []string{"role=ci\nno-equals-sign", "ro le=ci", "role=c i"} {
		res := ts.form(t, "/ui/machines/"+a, form(bad), cookie)
		if res.StatusCode != 400 || !strings.Contains(res.body, `id="labels-error"`) || !strings.Contains(res.body, html.EscapeString(strings.Split(bad, "\n")[0])) {
			t.Errorf("labels %q: %d, error shown %v", bad, res.StatusCode, strings.Contains(res.body, `id="labels-error"`))
		}
		if got := labelsOf(a); got != "old=x,role=ci" {
			t.Errorf("a refused form changed the labels: %q", got)
		}
	}
	if res := ts.form(t, "/ui/machines/"+a, form("role=ci\r\nrack=r3\r\n"), cookie); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("saving labels: %d %.300s", res.StatusCode, res.body)
	}
	if got := labelsOf(a); got != "rack=r3,role=ci" {
		t.Errorf("labels after the form: %q, want old removed, rack added", got)
	}
	page := string(ts.do(t, "GET", "/ui/machines?selector="+url.QueryEscape("role=ci,rack"), nil, cookie).body)
	if !strings.Contains(page, a) || strings.Contains(page, b) {
		t.Errorf("the table filtered by role=ci,rack: has a %v, has b %v", strings.Contains(page, a), strings.Contains(page, b))
	}
	page = string(ts.do(t, "GET", "/ui/machines?selector="+url.QueryEscape("tier in a"), nil, cookie).body)
	if !strings.Contains(page, `id="selector-error"`) || !strings.Contains(page, a) || !strings.Contains(page, b) {
		t.Errorf("a bad selector: the error is not shown, or the table is filtered anyway")
	}
}
