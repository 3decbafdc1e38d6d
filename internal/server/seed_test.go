package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/fleet"
)

// getFrom GETs path from local address ip (any 127/8 address is this
// host's loopback), with no credentials.
func (ts *testServer) getFrom(t *testing.T, ip, path string) resp {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}}
	defer c.CloseIdleConnections()
	res, err := c.Get(ts.URL + path)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", path, ip, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

// TestSeedAPI: user_data and meta_data are set through PUT, validated
// (a #cloud-config that is not YAML is a 400 naming the line), returned
// to authenticated callers only, and never in the open routes' answers.
func TestSeedAPI(t *testing.T) {
	ts := startServer(t, nil)
	const mac = "52:54:00:5e:ed:01"
	ud := "#cloud-config\nhostname: seeded\nwrite_files:\n  - path: /etc/bty-proof\n    content: \"token\\n\"\n"
	put := func(body string) resp {
		return ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth())
	}
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"user_data": "#cloud-config\n"}`), nil); r.code != 401 {
		t.Fatalf("PUT without auth: %d", r.code)
	}
	b, _ := json.Marshal(map[string]string{"user_data": ud, "boot_policy": "flash", "image": "a.img", "hostname": "n1", "provisioning_mode": "cloud-init"})
	if r := put(string(b)); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if m.UserData != ud || m.MetaData != "" {
		t.Fatalf("GET: user_data %q meta_data %q", m.UserData, m.MetaData)
	}
	if r := ts.do(t, "GET", "/machines/"+mac, nil, nil); r.code != 401 || strings.Contains(string(r.body), "bty-proof") {
		t.Fatalf("GET without auth: %d %s", r.code, r.body)
	}
	// Validation: the line of the YAML error, and nothing saved.
	for body, want := range map[string]string{
		`{"user_data": "#cloud-config\nusers:\n  - name: a\n   bad: [\n"}`: "line 4",
		`{"user_data": "hello"}`:                                             "does not recognise",
		`{"meta_data": "instance-id: [\n"}`:                                  "meta_data: meta-data is not valid YAML",
		`{"user_data": "` + strings.Repeat("x", fleet.MaxSeedBytes+1) + `"}`: "the limit is",
	} {
		r := put(body)
		if r.code != 400 || !strings.Contains(r.errMsg(t), want) {
			t.Errorf("PUT %.60s: %d %s, want 400 with %q", body, r.code, r.body, want)
		}
	}
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if m.UserData != ud {
		t.Fatalf("a refused PUT changed user_data: %q", m.UserData)
	}
	// The open routes' answers carry no seed.
	if r := ts.do(t, "GET", "/pxe/"+mac, nil, nil); r.code != 200 {
		t.Fatalf("PXE: %d", r.code)
	}
	for _, path := range []string{"/pxe/" + mac + "/failed", "/pxe/" + mac + "/done"} {
		r := ts.do(t, "POST", path, strings.NewReader("x"), nil)
		if r.code != 200 || strings.Contains(string(r.body), "bty-proof") || strings.Contains(string(r.body), "user_data\":\"#") {
			t.Errorf("POST %s answered the seed: %d %s", path, r.code, r.body)
		}
	}
}

// TestSeedRoutes: GET /pxe/{mac}/user-data and meta-data answer only
// during a flash cycle and only to the last PXE contact's address; the
// synthesised meta-data carries the hostname and an instance-id that
// changes with every flash.
func TestSeedRoutes(t *testing.T) {
	ts := startServer(t, nil)
	const mac = "52:54:00:5e:ed:02"
	ud := "#cloud-config\nruncmd:\n  - echo hi\n"
	b, _ := json.Marshal(map[string]string{"user_data": ud, "boot_policy": "flash", "image": "a.img", "hostname": "Node-7", "provisioning_mode": "cloud-init"})
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(string(b)), ts.auth()); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	ud1, md1 := "/pxe/"+mac+"/user-data", "/pxe/"+mac+"/meta-data"
	// Before any PXE contact: no flash cycle.
	if r := ts.getFrom(t, "127.0.0.1", ud1); r.code != 404 {
		t.Fatalf("before a contact: %d %s", r.code, r.body)
	}
	if r := ts.getFrom(t, "127.0.0.1", "/pxe/"+mac); r.code != 200 || !strings.Contains(string(r.body), "bty.provisioning=cloud-init") {
		t.Fatalf("flash contact: %d %s", r.code, r.body)
	}
	r := ts.getFrom(t, "127.0.0.1", ud1)
	if r.code != 200 || string(r.body) != ud || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("user-data from the machine: %d %q", r.code, r.body)
	}
	// From another address: 404, the body says nothing of the seed.
	for _, p := range []string{ud1, md1} {
		if r := ts.getFrom(t, "127.0.0.2", p); r.code != 404 || strings.Contains(string(r.body), "echo hi") {
			t.Errorf("%s from another address: %d %s", p, r.code, r.body)
		}
	}
	r = ts.getFrom(t, "127.0.0.1", md1)
	md := string(r.body)
	if r.code != 200 || !strings.Contains(md, "local-hostname: node-7\n") || !strings.HasPrefix(md, "instance-id: bty-5254005eed02-") {
		t.Fatalf("synthesised meta-data: %d %q", r.code, md)
	}
	// done closes the cycle.
	if r := ts.getFrom(t, "127.0.0.1", "/pxe/"+mac+"/done"); r.code != 405 {
		t.Fatalf("GET done: %d", r.code)
	}
	if r := ts.do(t, "POST", "/pxe/"+mac+"/done", nil, nil); r.code != 200 {
		t.Fatalf("done: %d", r.code)
	}
	if r := ts.getFrom(t, "127.0.0.1", ud1); r.code != 404 {
		t.Fatalf("after done: %d", r.code)
	}
	// The contact after done boots the disk (still no seed); the one
	// after that flashes again, with a new instance-id.
	ts.getFrom(t, "127.0.0.1", "/pxe/"+mac)
	if r := ts.getFrom(t, "127.0.0.1", md1); r.code != 404 {
		t.Fatalf("after the local contact: %d", r.code)
	}
	ts.getFrom(t, "127.0.0.1", "/pxe/"+mac)
	r = ts.getFrom(t, "127.0.0.1", md1)
	if r.code != 200 || string(r.body) == md || !strings.HasPrefix(string(r.body), "instance-id: bty-5254005eed02-") {
		t.Fatalf("second flash's meta-data: %d %q (first %q)", r.code, r.body, md)
	}
	// The machine moved: the last contact's address is the one served.
	ts.getFrom(t, "127.0.0.2", "/pxe/"+mac) // no done since: flash again, from a new address
	if r := ts.getFrom(t, "127.0.0.1", ud1); r.code != 404 {
		t.Fatalf("the old address after a contact from a new one: %d", r.code)
	}
	if r := ts.getFrom(t, "127.0.0.2", ud1); r.code != 200 {
		t.Fatalf("the new address: %d", r.code)
	}
	// The operator's own meta-data is served as it is.
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"meta_data": "instance-id: mine\n"}`), ts.auth()); r.code != 200 {
		t.Fatalf("PUT meta_data: %d %s", r.code, r.body)
	}
	if r := ts.getFrom(t, "127.0.0.2", md1); string(r.body) != "instance-id: mine\n" {
		t.Fatalf("operator meta-data: %d %q", r.code, r.body)
	}
	// No user_data on the record: 404 even in the cycle.
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"user_data": ""}`), ts.auth()); r.code != 200 {
		t.Fatalf("clearing: %d", r.code)
	}
	if r := ts.getFrom(t, "127.0.0.2", ud1); r.code != 404 {
		t.Fatalf("without user_data: %d", r.code)
	}
	if r := ts.getFrom(t, "127.0.0.2", "/pxe/zz/user-data"); r.code != 400 {
		t.Fatalf("bad MAC: %d", r.code)
	}
}
