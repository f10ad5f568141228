package telemetry

import (
	"slices"
	"testing"
)

func TestAnnotationScrapeRegexAndUnscraped(t *testing.T) {
	data := map[string]string{AMASettingsKey: "podannotationnamespaceregex = \"kube-system|shop-.*\"\n"}
	re, err := AnnotationScrapeRegex(data)
	if err != nil || re != "kube-system|shop-.*" {
		t.Fatalf("regex %q, %v", re, err)
	}
	if got := Unscraped(re, []string{"shop-web", "payments", "kube-system", "myshop-web"}); !slices.Equal(got, []string{"myshop-web", "payments"}) {
		t.Errorf("unscraped %v: the regex is anchored, so myshop-web and payments are not scraped", got)
	}
	if re, _ := AnnotationScrapeRegex(map[string]string{}); re != "" || len(Unscraped(re, []string{"a"})) != 1 {
		t.Error("no setting must mean no namespace is scraped")
	}
	if _, err := AnnotationScrapeRegex(map[string]string{AMASettingsKey: "podannotationnamespaceregex = shop"}); err == nil {
		t.Error("an unquoted regex was accepted")
	}
	if _, err := AnnotationScrapeRegex(map[string]string{AMASettingsKey: `podannotationnamespaceregex = "shop(("`}); err == nil {
		t.Error("an invalid regex was accepted")
	}
}
