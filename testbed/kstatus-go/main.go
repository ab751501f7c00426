// kstatus reads Kubernetes objects as JSON, one per line on stdin, and prints for each
// the status that sigs.k8s.io/cli-utils/pkg/kstatus computes — what Flux (and kpt, and
// `kubectl wait`-like tools built on it) decide about a resource. Test infrastructure only.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type answer struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		if len(in.Bytes()) == 0 {
			continue
		}
		obj := map[string]interface{}{}
		// As the API machinery reads objects: whole numbers as int64, which kstatus expects.
		if err := utiljson.Unmarshal(in.Bytes(), &obj); err != nil {
			fmt.Fprintln(os.Stderr, "not a JSON object:", err)
			os.Exit(2)
		}
		result, err := status.Compute(&unstructured.Unstructured{Object: obj})
		a := answer{}
		if err != nil {
			a.Error = err.Error()
		} else {
			a.Status, a.Message = result.Status.String(), result.Message
		}
		if err := out.Encode(a); err != nil {
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
