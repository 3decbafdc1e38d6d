package cli

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/btyproject/bty/internal/cmdrun"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/flash"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
)

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func newFlashCmd(e *env) *cobra.Command {
	var o flash.Options
	var progress, provisioning, userData, metaData, verifyMode string
	var dryRun, yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "flash --image PATH|URL --target DEVICE (--dry-run | --yes)",
		Short: "Write an image onto a disk, bit-identical, writing only data",
		Long: `Write an image onto a whole disk. The image is decoded natively
(.img, .img.zst, .img.gz, .img.xz, .img.bz2, .qcow2, detected by magic),
from a local path or an http(s) URL (streamed, resumed with Range if the
connection drops). Only data is written; zero ranges are zeroed by ioctl.
The first MiB (the partition table) is written last, so an interrupted
flash never looks bootable. After writing: fsync, partition table re-read.
VMDK, VHD, VHDX, VDI and other formats bty does not decode are refused
with the qemu-img convert command that makes a qcow2 of them.

What proves the bytes: every check a format carries is made while
decoding (zstd and xz checksums, gzip CRC32, bzip2 block CRCs, qcow2
metadata checked as qemu checks it); a corrupt, truncated or foreign
image fails (exit 1), a local xz, zstd or qcow2 before anything is
written. Raw, qcow2 and zstd written with --no-check carry no checksum of
their content: only --sha256 (the decoded image's sha256, from whoever
made it) proves such an image decoded to the intended bytes.
--verify proves the disk, not the decoding: it reads the written ranges
back (bypassing the page cache) and compares them with hashes of the
decoded bytes taken as they were written, so it catches a device that
loses or garbles writes, never a wrong decode. --verify=full reads the
image's whole range back and checks its sha256 (a second full read).

Checks before writing: the image exists and has a known format, it fits
the target, the target is a whole block device that is not mounted, not
held by LVM/md, not read-only and not the disk the running system or the
live media is on. --yes needs root. The target is checked again and opened
exclusively right before writing; a change then is exit 5.

Provisioning tunes the first boot once the bytes are on the disk:
  --provision cloud-init  finds the partition holding /etc/cloud and writes
      --user-data (checked: #cloud-config YAML, #! script or another
      cloud-init header) and meta-data (--meta-data, or generated with a
      fresh instance-id and --hostname or the image's hostname) to
      /var/lib/cloud/seed/nocloud-net/. No cloud-init in the image: exit 1.
  --provision cijoe       mounts the largest partition read-write and runs
      cijoe WORKFLOW --monitor [-c CONFIG] with BTY_ROOTFS set to it; its
      output is shown and kept in a log (see --log-dir). cijoe missing:
      exit 4 before anything is written; cijoe failing: exit 1.
Partitions are read from the disk's GPT or MBR and reached through the
kernel's partition nodes or loop devices; everything mounted or attached
is undone, also on failure and Ctrl-C. LVM and LUKS roots are refused.

--delta (a reflash of a disk that holds an older copy of the image, after
a CI job say) reads the target's chunks, hashes them against the image's
chunk store (bty index IMAGE; bty-web serves one for each image) and
fetches and writes only the chunks that differ; zero chunks are zeroed.
A URL needs --sha256 for it; a local store must be of this very file.
Without a usable store (none, another image's, damaged, or a target too
small) the flash is a full one, with a note saying why.

Nothing is written without --yes; --dry-run only prints the plan (and wins
over --yes).`,
		Example: `  bty flash --image debian.img.zst --target /dev/sdb --dry-run
  sudo bty flash --image debian.qcow2 --target /dev/nvme0n1 --yes --verify
  sudo bty flash --image debian.img --target /dev/sdb --yes --provision cloud-init --user-data user-data.yaml --hostname node7
  sudo bty flash --image debian.img --target /dev/sdb --yes --provision cijoe --cijoe-workflow setup.yaml
  sudo bty flash --image http://server:8080/images/debian.img.xz --target /dev/sda --yes --progress ndjson
  sudo bty flash --image debian.img.zst --target /dev/sdb --yes --delta`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.SHA256 = strings.ToLower(strings.TrimSpace(o.SHA256))
			o.Provision = fleet.Mode(provisioning)
			o.UserData, o.MetaData = flash.FileInput(userData), flash.FileInput(metaData)
			o.Verify = verifyMode == "written" || verifyMode == "true"
			o.VerifyFull = verifyMode == "full"
			switch {
			case o.Image == "":
				return usageErr("missing --image PATH|URL (see bty list images)")
			case o.Target == "":
				return usageErr("missing --target DEVICE (see bty list disks)")
			case !dryRun && !yes:
				return usageErr("nothing written: add --dry-run to see the plan, or --yes to flash %s", o.Target)
			case progress != progressText && progress != progressNDJSON && progress != progressNone:
				return usageErr("--progress must be text, ndjson or none, not %q", progress)
			case asJSON && progress == progressNDJSON:
				return usageErr("--json and --progress ndjson both write to stdout: choose one")
			case o.SHA256 != "" && !hexSHA256.MatchString(o.SHA256):
				return usageErr("--sha256 must be 64 hexadecimal digits")
			case verifyMode != "" && verifyMode != "written" && verifyMode != "full" && verifyMode != "true" && verifyMode != "false":
				return usageErr("--verify takes no value, or =full; not %q", verifyMode)
			case o.Chunks != "" && !o.Delta:
				return usageErr("--chunks names the chunk store of a --delta flash: add --delta")
			}
			if dryRun {
				return runDryRun(cmd, e, o, asJSON)
			}
			return runFlash(cmd, e, o, progress, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Image, "image", "", "image file or http(s) URL")
	f.StringVar(&o.Target, "target", "", "whole block device to write, e.g. /dev/sdb")
	f.StringVar(&provisioning, "provision", string(fleet.ModeNone), "first-boot tuning: none, cloud-init or cijoe")
	f.StringVar(&userData, "user-data", "", "cloud-init user-data file (with --provision cloud-init)")
	f.StringVar(&metaData, "meta-data", "", "cloud-init meta-data file (default: generated)")
	f.StringVar(&o.Hostname, "hostname", "", "cloud-init local-hostname (default: the image's /etc/hostname)")
	f.StringVar(&o.CijoeWorkflow, "cijoe-workflow", "", "cijoe workflow file (with --provision cijoe)")
	f.StringVar(&o.CijoeConfig, "cijoe-config", "", "cijoe config file (passed as -c)")
	f.StringVar(&o.LogDir, "log-dir", "", "directory for the cijoe log (default $BTY_LOG_DIR, else /var/log/bty)")
	f.StringVar(&progress, "progress", progressText, "progress output: text (stderr), ndjson (stdout) or none")
	f.StringVar(&o.SHA256, "sha256", "", "expected sha256 of the decoded image: proves the decoded bytes; a mismatch fails the flash")
	f.StringVar(&verifyMode, "verify", "", "read the written ranges back from the disk and compare with what was decoded (proves the disk, not the decoding); --verify=full reads the image's whole range back and checks its sha256")
	f.Lookup("verify").NoOptDefVal = "written"
	f.BoolVar(&o.Delta, "delta", false, "compare the target with the image's chunk store (bty index) and fetch and write only the chunks that differ; without a usable store, flash in full")
	f.StringVar(&o.Chunks, "chunks", "", "the chunk store's path or URL for --delta (default: IMAGE.btyc, or /images/NAME/chunks on bty-web)")
	f.BoolVar(&dryRun, "dry-run", false, "validate and print the plan; write nothing")
	f.BoolVar(&yes, "yes", false, "really write the target (needs root)")
	f.BoolVar(&asJSON, "json", false, "print one JSON document with the plan or the result")
	f.IntVar(&o.Workers, "workers", 0, "concurrent writers (default 4)")
	f.BoolVar(&o.Buffered, "buffered", false, "write through the page cache instead of O_DIRECT")
	_ = f.MarkHidden("buffered")
	_ = f.MarkHidden("workers")
	return cmd
}

func runDryRun(cmd *cobra.Command, e *env, o flash.Options, asJSON bool) error {
	plan, err := flash.Check(cmd.Context(), o)
	if asJSON {
		doc := map[string]any{
			"dry_run": true, "image": plan.Image, "target": plan.Target, "provisioning": plan.Provisioning,
			"notes": plan.Notes, "ok": plan.OK, "errors": plan.Errors,
		}
		if plan.PartitionTable != nil {
			doc["partition_table"] = plan.PartitionTable
		}
		if plan.ProvisionPartition != nil {
			doc["provision_partition"] = *plan.ProvisionPartition
		}
		_ = writeJSON(e.stdout, "flash", doc)
		return err
	}
	w := e.stdout
	fmt.Fprintf(w, "image:        %s", plan.Image.Ref)
	if plan.Image.Format != "" {
		fmt.Fprintf(w, " (%s, %s", plan.Image.Format, human.BytesOr(plan.Image.SizeBytes, "-"))
		if plan.Image.VirtualSizeBytes != nil {
			fmt.Fprintf(w, ", %s decoded", human.BytesOr(*plan.Image.VirtualSizeBytes, "-"))
		}
		fmt.Fprint(w, ")")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "target:       %s", plan.Target.Path)
	if plan.Target.SizeBytes > 0 {
		fmt.Fprintf(w, " (%s", human.BytesOr(plan.Target.SizeBytes, "-"))
		if plan.Target.Model != "" {
			fmt.Fprintf(w, ", %s", plan.Target.Model)
		}
		fmt.Fprint(w, ")")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "provisioning: %s\n", plan.Provisioning)
	if t := plan.PartitionTable; t != nil {
		fmt.Fprintf(w, "partitions:   %s\n", t.Scheme)
		for _, p := range t.Partitions {
			fs := p.Filesystem
			if fs == "" {
				fs = "-"
			}
			mark := ""
			if plan.ProvisionPartition != nil && *plan.ProvisionPartition == p.Number {
				mark = "  <- provisioning"
			}
			fmt.Fprintf(w, "  %-3d %10s  %-12s %s%s\n", p.Number, human.BytesOr(p.Size, "-"), fs, p.Type, mark)
		}
	}
	for _, n := range plan.Notes {
		fmt.Fprintf(w, "note:         %s\n", n)
	}
	for _, er := range plan.Errors {
		fmt.Fprintf(w, "error:        %s\n", er)
	}
	if plan.OK {
		fmt.Fprintln(w, "plan OK: run again with --yes (as root) to flash")
		return nil
	}
	return cmdrun.Reported(err)
}

func runFlash(cmd *cobra.Command, e *env, o flash.Options, progress string, asJSON bool) error {
	var sink event.Sink = event.Discard
	switch progress {
	case progressText:
		tty := false
		if f, ok := e.stderr.(*os.File); ok {
			tty = term.IsTerminal(int(f.Fd()))
		}
		ts := newTextSink(e.stderr, tty)
		if tty {
			if w, _, err := term.GetSize(int(e.stderr.(*os.File).Fd())); err == nil && w > 20 {
				ts.width = w
			}
		}
		sink = ts
	case progressNDJSON:
		sink = event.NewNDJSON(e.stdout)
	}
	o.Sink = sink
	o.Logger = e.log
	res, err := flash.Run(cmd.Context(), o)
	if asJSON {
		fields := map[string]any{"dry_run": false, "ok": err == nil, "result": res}
		if err != nil {
			fields["error"] = err.Error()
			fields["exit_code"] = exitcode.Code(err)
		}
		_ = writeJSON(e.stdout, "flash", fields)
	}
	if err != nil && progress != progressNone {
		// The failed event already told the user.
		return cmdrun.Reported(err)
	}
	return err
}
