package flash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/fault"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/image"
	"github.com/btyproject/bty/internal/layout"
	"github.com/btyproject/bty/internal/provision"
	"github.com/btyproject/bty/internal/source"
)

// prepared holds what validation opened, so the write reuses it.
type prepared struct {
	plan *Plan
	src  source.Source
	img  image.Image
	disk disk.Disk
	// userData, metaData and vendorData are the provisioning inputs as
	// checked.
	userData, metaData, vendorData []byte
	// seedOptional is Options.SeedOptional.
	seedOptional bool
}

// close releases the image and its source (again: a no-op).
func (p *prepared) close() {
	if p.img != nil {
		p.img.Close()
	}
	if p.src != nil {
		p.src.Close()
	}
	p.img, p.src = nil, nil
}

// fail records a validation error of a kind; the first error's kind
// decides, except that misuse outranks everything (it is what the user
// must fix first).
func (p *Plan) fail(kind fault.Kind, format string, args ...any) {
	p.Errors = append(p.Errors, fmt.Sprintf(format, args...))
	if len(p.Errors) == 1 || kind == fault.Usage {
		p.kind = kind
	}
}

func (p *Plan) note(format string, args ...any) {
	p.Notes = append(p.Notes, fmt.Sprintf(format, args...))
}

// Err returns nil for an OK plan, else an error of the plan's kind
// (fault.KindOf) carrying every reason.
func (p *Plan) Err() error {
	if len(p.Errors) == 0 {
		return nil
	}
	return fault.New(p.kind, "%s", strings.Join(p.Errors, "; "))
}

// Check validates opts without writing anything: the `--dry-run` plan.
// The returned error is the plan's Err().
func Check(ctx context.Context, opts Options) (*Plan, error) {
	p := prepare(ctx, opts, true)
	p.close()
	return p.plan, p.plan.Err()
}

// prepare runs every validation of docs/reference.md ("`bty flash`") and keeps
// the opened image.
// dryRun allows reading the head of a stream to show its partitions.
func prepare(ctx context.Context, opts Options, dryRun bool) *prepared {
	mode := opts.Provision.Effective()
	plan := &Plan{
		Image:        PlanImage{Ref: opts.Image, SizeBytes: -1},
		Target:       PlanTarget{Path: opts.Target},
		Provisioning: mode,
		Notes:        []string{},
		Errors:       []string{},
	}
	p := &prepared{plan: plan, seedOptional: opts.SeedOptional}
	p.checkProvisioning(opts, mode)
	// The target first: opening a remote image can take a while, and the
	// re-probe before writing catches whatever changes meanwhile.
	p.checkTarget(opts.Target)
	p.openImage(ctx, opts)

	if p.img != nil && plan.Target.SizeBytes > 0 {
		switch size := p.img.Size(); {
		case size < 0:
			plan.note("the %s image's decoded size is not known before decoding; the flash stops with an error if it does not fit the target", p.img.Format())
		case size == 0:
			plan.fail(fault.Failed, "%s", ErrEmptyImage.Error())
		case size > plan.Target.SizeBytes:
			plan.fail(fault.Failed, "%s", (&TooLargeError{Image: size, Target: plan.Target.SizeBytes}).Error())
		case size < plan.Target.SizeBytes:
			plan.note("the image (%s) is smaller than the target (%s); bytes past the image's end are left as they are",
				formatBytes(size), formatBytes(plan.Target.SizeBytes))
		}
	}
	if p.img != nil && mode != fleet.ModeNone {
		p.checkLayout(dryRun)
	}
	plan.OK = len(plan.Errors) == 0
	return p
}

// headBytes is how much of a stream a dry run decodes to read its
// partition table.
const headBytes = 4 << 20

// checkLayout reads the image's own partition table to say where
// provisioning will act, and refuses images it cannot work on before a
// byte is written. Random-access images are read in place; a stream's
// head is decoded only in a dry run (a real flash must not consume it).
func (p *prepared) checkLayout(dryRun bool) {
	plan := p.plan
	var (
		r      io.ReaderAt
		size   int64
		probed = true
	)
	switch img := p.img.(type) {
	case image.RandomAccess:
		r, size = img, img.Size()
	case image.Stream:
		if !dryRun {
			return
		}
		head, err := io.ReadAll(io.LimitReader(img, headBytes))
		if err != nil {
			plan.note("could not read the image's partition table: %v", err)
			return
		}
		r, size, probed = bytes.NewReader(head), int64(len(head)), false
	default:
		return
	}
	tbl, err := layout.ReadTable(r, size, 0)
	switch {
	case errors.Is(err, layout.ErrNoTable):
		if !probed {
			plan.note("the image has no partition table in its first %s", formatBytes(size))
			return
		}
		tbl = &layout.Table{Scheme: "none", SectorSize: 512, Partitions: []layout.Partition{{Size: size}}}
	case err != nil:
		plan.fail(fault.Failed, "provisioning: %v", err)
		return
	}
	if probed {
		for i := range tbl.Partitions {
			pt := &tbl.Partitions[i]
			pt.Filesystem = layout.Probe(r, pt.Start, pt.Size)
		}
	}
	plan.PartitionTable = tbl
	choice, err := provision.Choose(plan.Provisioning, tbl, probed)
	if err != nil && p.seedOptional && plan.Provisioning == fleet.ModeCloudInit {
		plan.note("provisioning (%s) is optional here and will write no seed: %v", plan.Provisioning, err)
		return
	}
	if err != nil {
		plan.fail(fault.Failed, "provisioning (%s): %v", plan.Provisioning, err)
		return
	}
	if choice.Partition > 0 || (tbl.Scheme == "none" && choice.Note != "") {
		n := choice.Partition
		plan.ProvisionPartition = &n
	}
	plan.note("%s", choice.Note)
}

func (p *prepared) checkProvisioning(opts Options, mode fleet.Mode) {
	plan := p.plan
	need := func(flag, path string) bool {
		if path == "" {
			plan.fail(fault.Usage, "provisioning mode %s needs %s FILE", mode, flag)
			return false
		}
		return fileMustExist(plan, flag, path)
	}
	// input reads and checks a seed file, or checks the seed's data.
	input := func(flag string, in Input, check func([]byte) error) []byte {
		b := in.Data
		if b == nil {
			if !fileMustExist(plan, flag, in.Path) {
				return nil
			}
			var ok bool
			if b, ok = readInput(plan, flag, in.Path); !ok {
				return nil
			}
		} else if len(b) > provision.MaxInputBytes {
			plan.fail(fault.Usage, "%s %s is larger than %d bytes", flag, in.Path, provision.MaxInputBytes)
			return nil
		}
		if err := check(b); err != nil {
			plan.fail(fault.Usage, "%s %s: %v", flag, in.Path, err)
		}
		return b
	}
	ignored := func(flags map[string]string) {
		for _, flag := range slices.Sorted(maps.Keys(flags)) {
			if flags[flag] != "" {
				plan.note("%s is ignored without a --provision mode that uses it", flag)
			}
		}
	}
	switch mode {
	case fleet.ModeNone:
		ignored(map[string]string{"--user-data": opts.UserData.Path, "--meta-data": opts.MetaData.Path, "--hostname": opts.Hostname,
			"--cijoe-workflow": opts.CijoeWorkflow, "--cijoe-config": opts.CijoeConfig, "vendor-data": opts.VendorData.Path})
	case fleet.ModeCloudInit:
		ignored(map[string]string{"--cijoe-workflow": opts.CijoeWorkflow, "--cijoe-config": opts.CijoeConfig})
		// The inputs are read once, here: what was checked is what lands.
		if opts.UserData.IsZero() {
			plan.fail(fault.Usage, "provisioning mode %s needs --user-data FILE", mode)
		} else {
			p.userData = input("--user-data", opts.UserData, provision.CheckUserData)
		}
		if !opts.MetaData.IsZero() {
			p.metaData = input("--meta-data", opts.MetaData, provision.CheckMetaData)
		}
		if !opts.VendorData.IsZero() {
			p.vendorData = input("vendor-data", opts.VendorData, provision.CheckVendorData)
		}
		if opts.Hostname != "" {
			if err := provision.CheckHostname(opts.Hostname); err != nil {
				plan.fail(fault.Usage, "--hostname: %v", err)
			}
		}
	case fleet.ModeCijoe:
		ignored(map[string]string{"--user-data": opts.UserData.Path, "--meta-data": opts.MetaData.Path, "--hostname": opts.Hostname,
			"vendor-data": opts.VendorData.Path})
		need("--cijoe-workflow", opts.CijoeWorkflow)
		if opts.CijoeConfig != "" {
			fileMustExist(plan, "--cijoe-config", opts.CijoeConfig)
		}
		// Tools are checked at plan time: nothing is written when the
		// provisioning step could not run.
		if _, err := exec.LookPath("cijoe"); err != nil {
			plan.fail(fault.MissingTool, "cijoe is not on PATH: install it (pipx install cijoe) or choose another --provision mode")
		}
	case fleet.ModeCijoeOnline:
		plan.fail(fault.Usage, "provisioning mode cijoe-online runs from bty-web after the target boots; bty flash supports none, cloud-init and cijoe")
	default:
		plan.fail(fault.Usage, "unknown provisioning mode %q: use none, cloud-init or cijoe", mode)
	}
}

// readInput reads a provisioning input file of bounded size.
func readInput(plan *Plan, flag, path string) ([]byte, bool) {
	f, err := os.Open(path)
	if err != nil {
		plan.fail(fault.Usage, "%s %s: %v", flag, path, unwrapPathError(err))
		return nil, false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, provision.MaxInputBytes+1))
	if err != nil {
		plan.fail(fault.Usage, "%s %s: %v", flag, path, err)
		return nil, false
	}
	if len(b) > provision.MaxInputBytes {
		plan.fail(fault.Usage, "%s %s is larger than %d bytes", flag, path, provision.MaxInputBytes)
		return nil, false
	}
	return b, true
}

func fileMustExist(plan *Plan, flag, path string) bool {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		plan.fail(fault.Usage, "%s %s: %v", flag, path, unwrapPathError(err))
		return false
	case st.IsDir():
		plan.fail(fault.Usage, "%s %s is a directory, not a file", flag, path)
		return false
	}
	return true
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, os.ErrNotExist) {
			return errors.New("no such file")
		}
		return pe.Err
	}
	return err
}

func (p *prepared) openImage(ctx context.Context, opts Options) {
	plan := p.plan
	if opts.Image == "" {
		plan.fail(fault.Usage, "no image given: add --image PATH|URL")
		return
	}
	src, err := source.Open(ctx, opts.Image, opts.Source)
	if err != nil {
		kind := fault.Failed
		if errors.Is(err, source.ErrNotFound) && !source.IsURL(opts.Image) {
			kind = fault.Usage
		}
		plan.fail(kind, "image: %v", err)
		return
	}
	p.src = src
	plan.Image.SizeBytes = src.Size()
	img, err := image.Open(ctx, src, image.Options{Logger: opts.Logger})
	if err != nil {
		plan.fail(fault.Failed, "image: %v", err)
		return
	}
	p.img = img
	plan.Image.Format = string(img.Format())
	if size := img.Size(); size >= 0 {
		plan.Image.VirtualSizeBytes = &size
	}
}

func (p *prepared) checkTarget(path string) {
	plan := p.plan
	if path == "" {
		plan.fail(fault.Usage, "no target given: add --target DEVICE (see: bty list disks)")
		return
	}
	d, err := disk.Get(path)
	if err != nil {
		kind := fault.Failed
		if errors.Is(err, disk.ErrNotExist) || errors.Is(err, disk.ErrNotBlockDevice) || errors.Is(err, disk.ErrIsPartition) {
			kind = fault.Usage
		}
		plan.fail(kind, "target: %v", err)
		return
	}
	p.disk = d
	plan.Target = PlanTarget{Path: d.Path, SizeBytes: d.SizeBytes, Model: d.Model, Serial: d.Serial, Transport: d.Transport}
	for _, why := range d.Problems() {
		plan.fail(fault.Failed, "target %s: %s", d.Path, why)
	}
}
