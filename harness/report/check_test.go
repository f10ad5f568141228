package report

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The browser check on the synthetic run. Without Chromium it is skipped; the page is then
// still checked without a browser by TestReportHTMLShowsEveryTestcase and
// TestCheckFindsWhatThePageGetsWrong.
func TestCheckHTMLInChromium(t *testing.T) {
	browser, err := FindBrowser()
	if err != nil {
		t.Skipf("no browser to render report.html (%v); the HTML is checked without one by TestReportHTMLShowsEveryTestcase", err)
	}
	dir, r, _ := writeSynthetic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := CheckHTML(ctx, dir, CheckOptions{Browser: browser})
	if err != nil {
		t.Fatal(err)
	}
	if res.Testcases != len(r.SpecReports) || res.Screenshot != filepath.Join(dir, "report.png") {
		t.Errorf("result %+v", res)
	}
	// The window is sized to the laid-out page, which is taller than the first screen.
	if res.Width != ScreenshotWidth || res.Height <= 900 {
		t.Errorf("screenshot is %dx%d, want %d wide and the page's full height", res.Width, res.Height, ScreenshotWidth)
	}

	// What the browser shows is what counts: a script that hides a failure after the page
	// loads passes the check of the file as written, but not the check of the rendered page.
	path := filepath.Join(dir, HTMLFile)
	page, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hide := `<script>document.querySelector('tr.spec.bad').remove()</script></body>`
	if err := os.WriteFile(path, []byte(strings.Replace(string(page), "</body>", hide, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckStatic(dir); err != nil {
		t.Fatalf("the file as written should still pass: %v", err)
	}
	if _, err := CheckHTML(ctx, dir, CheckOptions{Browser: browser}); err == nil || !strings.Contains(err.Error(), "appears 0 times on the page") {
		t.Errorf("a row removed by script was not noticed: %v", err)
	}
}

func TestCheckHTMLReportsABrowserThatHangs(t *testing.T) {
	dir, _, _ := writeSynthetic(t)
	// A stand-in browser that never answers: the check must give up at its timeout.
	fake := filepath.Join(t.TempDir(), "chromium")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := CheckHTML(context.Background(), dir, CheckOptions{Browser: fake, Timeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "did not finish within 500ms") {
		t.Errorf("error %v, want a timeout", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the check took %s to give up", took)
	}
}
