package client_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/fleet"
)

const goodWorkflow = "doc: smoke test\nsteps:\n- name: uname\n  run: uname -a\n- name: disks\n  run: lsblk\n"

// TestWorkflows: a workflow goes up (created, then replaced), is listed
// with its sha256, comes back byte for byte with the server's sha256,
// a file cijoe would refuse is a 400 naming its line, and delete
// removes it (an unknown name is a 404).
func TestWorkflows(t *testing.T) {
	t.Parallel()
	_, c := loggedIn(t)
	cx := ctx(t)
	ws, err := c.Workflows(cx)
	if err != nil || len(ws) != 0 {
		t.Fatalf("Workflows on an empty server = %+v, %v", ws, err)
	}
	w, created, err := c.PutWorkflow(cx, "smoke.yaml", []byte(goodWorkflow))
	if err != nil || !created || w.Name != "smoke.yaml" || w.Size != int64(len(goodWorkflow)) || w.SHA256 != fleet.SHA256Hex([]byte(goodWorkflow)) {
		t.Fatalf("PutWorkflow = %+v, created %v, %v", w, created, err)
	}
	if _, created, err := c.PutWorkflow(cx, "smoke.yaml", []byte(goodWorkflow)); err != nil || created {
		t.Errorf("second PutWorkflow: created %v, %v; want replaced", created, err)
	}
	ws, err = c.Workflows(cx)
	if err != nil || len(ws) != 1 || ws[0].Name != "smoke.yaml" || ws[0].SHA256 != w.SHA256 || ws[0].ModifiedAt.IsZero() {
		t.Errorf("Workflows = %+v, %v", ws, err)
	}
	b, sum, err := c.Workflow(cx, "smoke.yaml")
	if err != nil || string(b) != goodWorkflow || sum != w.SHA256 {
		t.Errorf("Workflow = %q, sha %q, %v", b, sum, err)
	}
	bad := "steps:\n- name: a\n  run: true\n- run: false\n"
	_, _, err = c.PutWorkflow(cx, "bad.yaml", []byte(bad))
	if client.StatusCode(err) != 400 || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "step 2 has no name") {
		t.Errorf("PutWorkflow of a nameless step: %v; want 400 naming line 4", err)
	}
	big := bytes.Repeat([]byte("#"), fleet.MaxWorkflowBytes+1)
	if _, _, err := c.PutWorkflow(cx, "big.yaml", big); client.StatusCode(err) != 413 {
		t.Errorf("PutWorkflow over the cap: %v; want 413", err)
	}
	if _, _, err := c.Workflow(cx, "bad.yaml"); !client.IsNotFound(err) {
		t.Errorf("Workflow of a refused upload: %v; want 404", err)
	}
	if err := c.DeleteWorkflow(cx, "smoke.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteWorkflow(cx, "smoke.yaml"); !client.IsNotFound(err) {
		t.Errorf("deleting it again: %v; want 404", err)
	}
}

// TestWorkflowInUse: a workflow a machine references cannot be deleted
// (409 naming the machine) and the listing names the machine.
func TestWorkflowInUse(t *testing.T) {
	t.Parallel()
	_, c := loggedIn(t)
	cx := ctx(t)
	if _, _, err := c.PutWorkflow(cx, "ci.yml", []byte(goodWorkflow)); err != nil {
		t.Fatal(err)
	}
	mac := fleet.MustParseMAC("52:54:00:77:00:01")
	ref, mode := "ci.yml", fleet.ModeCijoeOnline
	if _, _, err := c.PutMachine(cx, mac, fleet.MachineUpdate{CijoeWorkflowRef: &ref, ProvisioningMode: &mode}); err != nil {
		t.Fatal(err)
	}
	ws, err := c.Workflows(cx)
	if err != nil || len(ws) != 1 || len(ws[0].Machines) != 1 || ws[0].Machines[0] != mac {
		t.Errorf("Workflows = %+v, %v; want ci.yml used by %s", ws, err, mac)
	}
	err = c.DeleteWorkflow(cx, "ci.yml")
	if !client.IsConflict(err) || !strings.Contains(err.Error(), mac.String()) {
		t.Errorf("deleting a workflow in use: %v; want 409 naming %s", err, mac)
	}
}

// TestRuns: runs the store holds come back newest first, one by id, its
// log from an offset with the result, and a cancel ends a queued run
// (a second cancel is a 409; an unknown id a 404).
func TestRuns(t *testing.T) {
	t.Parallel()
	ts, c := loggedIn(t)
	cx := ctx(t)
	mac := fleet.MustParseMAC("52:54:00:77:00:02")
	img := "a.img"
	if _, _, err := c.PutMachine(cx, mac, fleet.MachineUpdate{Image: &img}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	exit := 0
	r1, _, err := ts.Store.SaveRun(cx, fleet.Run{MAC: mac, Source: fleet.RunOnline, Workflow: "w.yaml", Image: img,
		Result: fleet.RunRunning, CreatedAt: t0}.End(fleet.RunSuccess, "", &exit, t0.Add(time.Minute)), nil)
	if err != nil {
		t.Fatal(err)
	}
	r2, _, err := ts.Store.SaveRun(cx, fleet.Run{MAC: mac, Source: fleet.RunOnline, Workflow: "w.yaml", Image: img,
		Result: fleet.RunQueued, CreatedAt: t0.Add(2 * time.Minute)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	page, err := c.Runs(cx, mac, 10, 0)
	if err != nil || page.Total != 2 || len(page.Runs) != 2 || page.Runs[0].ID != r2.ID || page.Runs[1].ID != r1.ID {
		t.Fatalf("Runs = %+v, %v", page, err)
	}
	if page, err := c.Runs(cx, mac, 1, 1); err != nil || page.Total != 2 || len(page.Runs) != 1 || page.Runs[0].ID != r1.ID {
		t.Errorf("Runs limit 1 offset 1 = %+v, %v", page, err)
	}
	r, err := c.Run(cx, r1.ID)
	if err != nil || r.Result != fleet.RunSuccess || r.ExitStatus == nil || *r.ExitStatus != 0 || r.Workflow != "w.yaml" {
		t.Errorf("Run(%d) = %+v, %v", r1.ID, r, err)
	}
	if _, err := c.Run(cx, 999999); !client.IsNotFound(err) {
		t.Errorf("Run of an unknown id: %v; want 404", err)
	}
	data, size, res, err := c.RunLog(cx, r2.ID, 0)
	if err != nil || len(data) != 0 || size != 0 || res != fleet.RunQueued {
		t.Errorf("RunLog of a queued run = %q, size %d, %q, %v", data, size, res, err)
	}
	if _, err := c.RunReport(cx, r2.ID); !client.IsNotFound(err) {
		t.Errorf("RunReport of a run without one: %v; want 404", err)
	}
	cr, err := c.CancelRun(cx, r2.ID)
	if err != nil || cr.Result != fleet.RunCancelled || cr.EndedAt == nil {
		t.Fatalf("CancelRun = %+v, %v", cr, err)
	}
	if _, err := c.CancelRun(cx, r2.ID); !client.IsConflict(err) {
		t.Errorf("cancelling it again: %v; want 409", err)
	}
	if got, err := ts.Store.GetRun(cx, r2.ID); err != nil || got.Result != fleet.RunCancelled {
		t.Errorf("the stored run after cancel: %+v, %v", got, err)
	}
	if _, err := c.CancelRun(cx, 999999); !client.IsNotFound(err) {
		t.Errorf("cancelling an unknown run: %v; want 404", err)
	}
}
