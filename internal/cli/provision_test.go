package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/looptest"
)

// flashResult is the part of `flash --json` these tests read.
type flashResult struct {
	OK       bool   `json:"ok"`
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error"`
	Result   struct {
		Provisioning string `json:"provisioning"`
		Provision    *struct {
			Partition  int    `json:"partition"`
			Filesystem string `json:"filesystem"`
			SeedDir    string `json:"seed_dir"`
			Hostname   string `json:"hostname"`
			InstanceID string `json:"instance_id"`
			LogPath    string `json:"log_path"`
		} `json:"provision"`
	} `json:"result"`
	ProvisionPartition *int `json:"provision_partition"`
	PartitionTable     *struct {
		Scheme     string `json:"scheme"`
		Partitions []struct {
			Number     int    `json:"number"`
			Filesystem string `json:"filesystem"`
		} `json:"partitions"`
	} `json:"partition_table"`
}

func decodeFlash(t *testing.T, r result) flashResult {
	t.Helper()
	var fr flashResult
	if err := json.Unmarshal([]byte(r.stdout), &fr); err != nil {
		t.Fatalf("flash --json: %v\nstdout: %s\nstderr: %s", err, r.stdout, r.stderr)
	}
	return fr
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProvisionThroughBinary runs bty flash --provision as a user would:
// dry run, cloud-init, a disk without cloud-init, and cijoe.
func TestProvisionThroughBinary(t *testing.T) {
	looptest.RequireRoot(t)
	t.Setenv("TMPDIR", t.TempDir())
	withCloud := imagetest.NewLinuxDisk(t, map[string]string{
		"etc/hostname": "img\n", "etc/cloud/cloud.cfg": "users: [default]\n", "usr/": ""})
	without := imagetest.NewLinuxDisk(t, map[string]string{"etc/hostname": "img\n", "usr/": ""})
	dev := looptest.New(t, withCloud.Size)
	ud := writeFile(t, "user-data", "#cloud-config\nruncmd: [ [ touch, /ran ] ]\n")

	// The dry run reads the image's table and names the partition.
	r := bty(t, false, nil, "flash", "--image", withCloud.Path, "--target", dev.Path, "--dry-run", "--json",
		"--provision", "cloud-init", "--user-data", ud)
	fr := decodeFlash(t, r)
	if r.code != 0 || fr.ProvisionPartition == nil || *fr.ProvisionPartition != 2 || fr.PartitionTable == nil ||
		len(fr.PartitionTable.Partitions) != 2 || fr.PartitionTable.Partitions[1].Filesystem != "ext4" {
		t.Fatalf("dry run: exit %d, %s", r.code, r.stdout)
	}
	r = bty(t, false, nil, "flash", "--image", withCloud.Path, "--target", dev.Path, "--dry-run",
		"--provision", "cloud-init", "--user-data", ud)
	if !strings.Contains(r.stdout, "ext4") || !strings.Contains(r.stdout, "<- provisioning") {
		t.Errorf("text plan does not show the partitions:\n%s", r.stdout)
	}

	// cloud-init, for real.
	r = bty(t, false, nil, "flash", "--image", withCloud.Path, "--target", dev.Path, "--yes", "--json", "--progress", "none",
		"--provision", "cloud-init", "--user-data", ud, "--hostname", "rack3-node12")
	fr = decodeFlash(t, r)
	p := fr.Result.Provision
	if r.code != 0 || !fr.OK || p == nil || p.Partition != 2 || p.Filesystem != "ext4" ||
		p.SeedDir != "/var/lib/cloud/seed/nocloud-net" || p.Hostname != "rack3-node12" || p.InstanceID == "" {
		t.Fatalf("cloud-init flash: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// Read the seed back with debugfs through a loop device on the
	// partition: an independent reader of the ext4 bytes on the disk.
	loop := strings.TrimSpace(looptest.Run(t, "losetup", "-f", "--show", "-r", "-o", "9437184", "--sizelimit", "50331648", dev.Path))
	defer looptest.Run(t, "losetup", "-d", loop)
	got := looptest.Run(t, "debugfs", "-R", "cat /var/lib/cloud/seed/nocloud-net/user-data", loop)
	if !strings.Contains(got, "runcmd: [ [ touch, /ran ] ]") {
		t.Errorf("user-data read back with debugfs:\n%s", got)
	}
	got = looptest.Run(t, "debugfs", "-R", "cat /var/lib/cloud/seed/nocloud-net/meta-data", loop)
	if !strings.Contains(got, "local-hostname: rack3-node12") || !strings.Contains(got, "instance-id: "+p.InstanceID) {
		t.Errorf("meta-data read back with debugfs:\n%s", got)
	}

	// No cloud-init in the image: the plan cannot tell (ext4 may hold
	// /etc/cloud), the flash writes and then fails loudly, exit 1.
	r = bty(t, false, nil, "flash", "--image", without.Path, "--target", dev.Path, "--yes", "--json", "--progress", "none",
		"--provision", "cloud-init", "--user-data", ud)
	fr = decodeFlash(t, r)
	if r.code != 1 || fr.ExitCode != 1 || !strings.Contains(fr.Error, "holds /etc/cloud") || !strings.Contains(fr.Error, "no seed was written") {
		t.Errorf("without cloud-init: exit %d: %s", r.code, r.stdout)
	}
	if got, want := dev.SHA256(t, without.Size), imagetest.SHA256(t, without.Path, 0, -1); got != want {
		t.Errorf("the disk differs from the image after a refused provisioning")
	}

	// cijoe with the stand-in; the log path is in the result and the
	// text progress shows the workflow's output.
	bin := t.TempDir()
	standIn, _ := filepath.Abs("../../e2e/testdata/cijoe")
	if err := os.Symlink(standIn, filepath.Join(bin, "cijoe")); err != nil {
		t.Fatal(err)
	}
	wf := writeFile(t, "wf.yaml", "steps:\n- name: proof\n  run: echo from-the-workflow > $BTY_ROOTFS/etc/proof; echo wrote proof\n")
	logDir := t.TempDir()
	r = bty(t, false, []string{"PATH=" + bin + ":" + os.Getenv("PATH")}, "flash", "--image", without.Path, "--target", dev.Path,
		"--yes", "--provision", "cijoe", "--cijoe-workflow", wf, "--log-dir", logDir)
	if r.code != 0 || !strings.Contains(r.stderr, "| wrote proof") || !strings.Contains(r.stderr, "cijoe log: "+logDir) {
		t.Fatalf("cijoe: exit %d\n%s", r.code, r.stderr)
	}
	loop2 := strings.TrimSpace(looptest.Run(t, "losetup", "-f", "--show", "-r", "-o", "9437184", "--sizelimit", "50331648", dev.Path))
	defer looptest.Run(t, "losetup", "-d", loop2)
	if got := looptest.Run(t, "debugfs", "-R", "cat /etc/proof", loop2); !strings.Contains(got, "from-the-workflow") {
		t.Errorf("/etc/proof read back: %q", got)
	}
	if left, _ := filepath.Glob(filepath.Join(os.Getenv("TMPDIR"), "bty-mnt-*")); len(left) > 0 {
		t.Errorf("mount points left: %v", left)
	}
}
