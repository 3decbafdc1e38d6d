package ctl

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// bootFlash plays the machine mac once its rollout reflash is asked
// for: it PXE-boots until it is served the live env, then reports done
// (ready at once: ready check none) or failed.
func bootFlash(t *testing.T, base, mac string, ok bool) {
	t.Helper()
	var script string
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(script, "bty.image_url") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		script = httpDo(t, "GET", base+"/pxe/"+mac, "", "")
	}
	m := regexp.MustCompile(`bty\.cycle=([0-9a-f]{32})`).FindStringSubmatch(script)
	if m == nil || !strings.Contains(script, "new.img") {
		t.Fatalf("%s was not served the live env flashing new.img:\n%s", mac, script)
	}
	if ok {
		httpDo(t, "POST", base+"/pxe/"+mac+"/done", m[1], `{"bytes_written":1048576,"total_bytes":1048576}`)
	} else {
		httpDo(t, "POST", base+"/pxe/"+mac+"/failed", m[1], `{"reason":"disk on fire"}`)
	}
}

// TestRolloutStartWait: bty-ctl rollout start --wait against a real
// bty-web follows the rollout over its event stream, a line per state
// change, and exits 0 once it succeeded; status, list and --json show
// it; a rollout whose canary fails exits 1 with the reason; pause,
// resume and abort answer with the state, and a refused one is exit 1.
func TestRolloutStartWait(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	for _, img := range []string{"old.img", "new.img"} {
		if err := os.WriteFile(filepath.Join(h.srv.Config.ImageRoot, img), make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	macs := []string{"52:54:00:a0:00:01", "52:54:00:a0:00:02", "52:54:00:a0:00:03"}
	for _, mac := range macs {
		h.want(h.run("", "machines", "set", mac, "--image", "old.img", "--policy", "local", "--ready-check", "none", "--label", "role=ci"), 0, mac)
	}
	h.want(h.run("", "rollout", "start", "--image", "new.img"), 2, "--selector is required")
	h.want(h.run("", "rollout", "start", "--selector", "role=ci", "--image", "new.img", "--max-parallel", "0"), 2, "--max-parallel")
	h.want(h.run("", "rollout", "start", "--selector", "role=none", "--image", "new.img"), 1, `picks no machine`)
	h.want(h.run("", "rollout", "status", "x"), 2, "positive number")

	done := make(chan result, 1)
	go func() {
		done <- h.run("", "rollout", "start", "--selector", "role=ci", "--image", "new.img", "--max-parallel", "2", "--canary", "1", "--wait")
	}()
	base := h.srv.URL
	bootFlash(t, base, macs[0], true)
	bootFlash(t, base, macs[1], true)
	bootFlash(t, base, macs[2], true)
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("rollout start --wait did not return after the last flash")
	}
	h.want(r, 0, "rollout 1 succeeded")
	for _, want := range []string{"rollout 1 of new.img over 3 machines (selector role=ci): canary " + macs[0], macs[0] + "  flashing", macs[2] + "  succeeded", "3 succeeded, 0 failed, 0 skipped of 3"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--wait output lacks %q:\n%s", want, r.stdout)
		}
	}
	// The canary's flashing line comes before the others'.
	if i, j := strings.Index(r.stdout, macs[0]+"  flashing"), strings.Index(r.stdout, macs[1]+"  flashing"); i < 0 || j < 0 || i > j {
		t.Errorf("the canary did not flash first:\n%s", r.stdout)
	}
	h.want(h.run("", "rollout", "status", "1"), 0, "rollout 1: succeeded")
	h.want(h.run("", "rollout", "list"), 0, "3/3 ok, 0 failed")
	env := envelope(t, h.run("", "rollout", "status", "1", "--json"), "rollout-status")
	if ro := env["rollout"].(map[string]any); ro["state"] != "succeeded" || len(ro["machines"].([]any)) != 3 {
		t.Fatalf("status --json: %v", env)
	}
	r = h.run("", "machines", "history", macs[1])
	h.want(r, 0, "rollout")

	// A failing canary: exit 1 with the reason.
	go func() {
		done <- h.run("", "rollout", "start", "--selector", "role=ci", "--image", "new.img", "--wait")
	}()
	bootFlash(t, base, macs[0], false)
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("rollout start --wait did not return after the canary failed")
	}
	h.want(r, 1, "rollout 2 failed: canary "+macs[0]+" failed")
	h.want(r, 1, "disk on fire")

	// Pause, resume, abort.
	h.want(h.run("", "rollout", "start", "--selector", "role=ci", "--image", "new.img"), 0, "rollout 3 of new.img")
	h.want(h.run("", "rollout", "resume", "3"), 1, "not paused")
	h.want(h.run("", "rollout", "pause", "3"), 0, "rollout 3 is paused")
	h.want(h.run("", "rollout", "resume", "3"), 0, "rollout 3 is running")
	h.want(h.run("", "rollout", "abort", "3"), 0, "rollout 3 is aborted")
	h.want(h.run("", "rollout", "abort", "3"), 1, "has ended")
	h.want(h.run("", "rollout", "status", "99"), 1, "no rollout 99")
}
