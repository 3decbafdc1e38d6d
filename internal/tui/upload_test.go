package tui

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/client/clienttest"
	"github.com/btyproject/bty/internal/flash"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/provision"
)

// TestUploadCijoeLog: after a flash whose offline cijoe ran, bty-tui
// driven by a server uploads the cijoe log, in the machine's flash cycle,
// to a real bty-web, where it is one of the machine's runs with the
// workflow's name and cijoe's exit status; without the cycle's token the
// server refuses it and the model only logs that.
func TestUploadCijoeLog(t *testing.T) {
	srv := clienttest.Start(t, nil)
	mac := fleet.MustParseMAC("52:54:00:e2:e0:09")
	_, cycle := clienttest.PXEBoot(t, srv.URL, mac)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "cijoe-loop0.log")
	if err := os.WriteFile(logPath, []byte("# step check\nchecked the rootfs\n# bty: cijoe exit status 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exit := 2
	model := func(token string) Model {
		m := New(context.Background(), Config{MAC: mac, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			UploadRun: func(ctx context.Context, mac fleet.MAC, wf string, exit int, log []byte) error {
				return c.PXEUploadRun(ctx, mac, token, wf, exit, log)
			}})
		m.flashOpts = flash.Options{CijoeWorkflow: "/work/flows/provision.yaml"}
		m.result = &flash.Result{Provision: &provision.Result{LogPath: logPath, CijoeExit: &exit}}
		return m
	}
	model(strings.Repeat("0", 32)).uploadRun()() // refused: logged only
	model(cycle).uploadRun()()

	ctx := context.Background()
	if _, err := c.Login(ctx, clienttest.Password); err != nil {
		t.Fatal(err)
	}
	page, err := c.Runs(ctx, mac, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 1 || page.Runs[0].Source != fleet.RunOffline || page.Runs[0].Workflow != "provision.yaml" ||
		page.Runs[0].ExitStatus == nil || *page.Runs[0].ExitStatus != 2 || page.Runs[0].Result != fleet.RunFailed {
		t.Fatalf("the server's runs after the upload: %+v", page)
	}
	log, _, _, err := c.RunLog(ctx, page.Runs[0].ID, 0)
	if err != nil || !strings.Contains(string(log), "checked the rootfs") {
		t.Errorf("the uploaded log: %q, %v", log, err)
	}
}
