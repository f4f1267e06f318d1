// Setting a feature on a qube at runtime. The ipv6 feature is inherited down the netvm tree
// (the first qube up the chain that has it decides), so a change is pushed to the qube and
// every qube below it; services are rewritten in the qube only.
import { cloneModel } from '../topology/model.js';
import { descendants } from '../dom0/addresses.js';
import { featureProblem } from '../topology/validate.js';
import type { Lab } from '../runtime/lab.js';
import { propagate } from './propagate.js';

/** Sets (value) or removes (undefined) a feature; "" is a set-but-false value. */
export async function setFeature(lab: Lab, name: string, feature: string, value: string | undefined): Promise<void> {
  const spec = lab.spec(name);
  if (value !== undefined) {
    const problem = featureProblem(feature, value);
    if (problem) throw new Error(`feature ${feature}: ${problem}`);
  }
  const before = cloneModel(lab.model);
  if (value === undefined) delete spec.features[feature];
  else spec.features[feature] = value;
  lab.progress({ qube: name, step: 'feature set', detail: value === undefined ? `${feature} unset` : `${feature}=${JSON.stringify(value)}` });
  if (feature.startsWith('service.')) {
    if (lab.isRunning(name)) await lab.writeOwnEntries(name);
  } else {
    await propagate(lab, before, [name, ...descendants(lab.model, name)]);
  }
  await lab.saveState();
}
