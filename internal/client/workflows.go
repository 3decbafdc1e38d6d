package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// cijoe-online (docs/reference.md, "cijoe-online"): the workflow files
// bty-web keeps and the runs it makes of them.

// MaxRunLogChunk bounds the bytes RunLog reads in one call; a longer
// log is read on by calling again from the offset reached.
const MaxRunLogChunk = 4 << 20

// maxRunReport bounds cijoe's report.html.
const maxRunReport = 64 << 20

// IsConflict reports whether the server answered 409 (a workflow still
// referenced, a run that already ended, no known-good baseline).
func IsConflict(err error) bool { return StatusCode(err) == http.StatusConflict }

// Workflows lists the workflow files bty-web keeps, by name, each with
// the machines whose cijoe_workflow_ref names it.
func (c *Client) Workflows(ctx context.Context) ([]api.Workflow, error) {
	var out []api.Workflow
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("workflows"), auth: true}, &out)
	if out == nil && err == nil {
		out = []api.Workflow{}
	}
	return out, err
}

// Workflow returns a workflow file's bytes and the sha256 the server
// gives for them (X-Workflow-SHA256; "" when it sent none). An unknown
// name is a 404 *APIError.
func (c *Client) Workflow(ctx context.Context, name string) ([]byte, string, error) {
	var b []byte
	var h http.Header
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("workflows", name), auth: true,
		text: &b, textLimit: fleet.MaxWorkflowBytes, respHeader: &h}, nil)
	if err != nil {
		return nil, "", err
	}
	return b, strings.ToLower(strings.TrimSpace(h.Get("X-Workflow-SHA256"))), nil
}

// PutWorkflow stores body as the workflow name, replacing one of that
// name; created says whether it is new. The server checks it as cijoe
// would read it and refuses (400) a file with a problem, naming its
// line; a file over fleet.MaxWorkflowBytes is a 413.
func (c *Client) PutWorkflow(ctx context.Context, name string, body []byte) (w api.Workflow, created bool, err error) {
	h := http.Header{"Content-Type": {"application/yaml"}}
	code, err := c.do(ctx, request{method: http.MethodPut, url: c.endpoint("workflows", name), raw: bytes.NewReader(body),
		size: int64(len(body)), header: h, auth: true}, &w)
	return w, code == http.StatusCreated, err
}

// DeleteWorkflow deletes a workflow file: an unknown name is a 404
// *APIError, one that machines still reference a 409 naming them.
func (c *Client) DeleteWorkflow(ctx context.Context, name string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, url: c.endpoint("workflows", name), auth: true}, nil)
	return err
}

// Runs returns a page of the machine's workflow runs, newest first.
func (c *Client) Runs(ctx context.Context, mac fleet.MAC, limit, offset int) (api.RunPage, error) {
	var out api.RunPage
	u := c.endpoint("machines", mac.String(), "runs") + "?limit=" + strconv.Itoa(limit) + "&offset=" + strconv.Itoa(offset)
	_, err := c.do(ctx, request{method: http.MethodGet, url: u, auth: true}, &out)
	if out.Runs == nil && err == nil {
		out.Runs = []fleet.Run{}
	}
	return out, err
}

// Run returns one run; an unknown id is a 404 *APIError.
func (c *Client) Run(ctx context.Context, id int64) (api.Run, error) {
	var out api.Run
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("runs", strconv.FormatInt(id, 10)), auth: true}, &out)
	return out, err
}

// RunLog returns the run's log from byte offset on (at most
// MaxRunLogChunk bytes of it), the whole log's size so far
// (X-Log-Size) and the run's result when the server answered
// (X-Run-Result): a caller following a running log calls again from
// offset+len(data) until the result has ended and the offset reached
// the size.
func (c *Client) RunLog(ctx context.Context, id int64, offset int64) (data []byte, size int64, result fleet.RunResult, err error) {
	u := c.endpoint("runs", strconv.FormatInt(id, 10), "log") + "?offset=" + strconv.FormatInt(offset, 10)
	var h http.Header
	_, err = c.do(ctx, request{method: http.MethodGet, url: u, auth: true, respHeader: &h,
		stream: func(body io.Reader) error {
			var rerr error
			data, rerr = io.ReadAll(io.LimitReader(body, MaxRunLogChunk))
			if rerr != nil {
				return fmt.Errorf("reading the log of run %d: %w", id, rerr)
			}
			return nil
		}}, nil)
	if err != nil {
		return nil, 0, "", err
	}
	result = fleet.RunResult(strings.TrimSpace(h.Get("X-Run-Result")))
	if result == "" {
		return nil, 0, "", fmt.Errorf("the log of run %d came without its X-Run-Result header (is %s a bty-web with cijoe-online?)", id, c.Server())
	}
	size = offset + int64(len(data))
	if s := h.Get("X-Log-Size"); s != "" {
		n, perr := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if perr != nil || n < 0 {
			return nil, 0, "", fmt.Errorf("the log of run %d: the server's X-Log-Size %q is not a size", id, s)
		}
		size = n
	}
	return data, size, result, nil
}

// RunReport returns the report.html cijoe wrote for the run; a run
// without one is a 404 *APIError.
func (c *Client) RunReport(ctx context.Context, id int64) ([]byte, error) {
	var b []byte
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("runs", strconv.FormatInt(id, 10), "report"), auth: true,
		text: &b, textLimit: maxRunReport}, nil)
	return b, err
}

// CancelRun cancels a queued or running run; one that already ended is
// a 409 *APIError.
func (c *Client) CancelRun(ctx context.Context, id int64) (api.Run, error) {
	var out api.Run
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("runs", strconv.FormatInt(id, 10), "cancel"), auth: true}, &out)
	return out, err
}
