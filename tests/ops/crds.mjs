// Validates Kubernetes custom resources with @kubernetes-models' validators, which are generated
// from the official CRD schemas (prometheus-operator's ServiceMonitor, KEDA's ScaledObject) and
// installed by `make tools`. Reads a JSON array of objects on stdin and prints a JSON array with
// each object's errors (an empty list when it validates).
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";

const MODELS = {
  "monitoring.coreos.com/v1 ServiceMonitor": ServiceMonitor,
  "keda.sh/v1alpha1 ScaledObject": ScaledObject,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((doc) => {
  const Model = MODELS[`${doc.apiVersion} ${doc.kind}`];
  if (!Model) return [`no validator for ${doc.apiVersion} ${doc.kind}`];
  try {
    new Model(doc).validate();
    return [];
  } catch (error) {
    return [String(error.message)];
  }
});
process.stdout.write(JSON.stringify(results));
