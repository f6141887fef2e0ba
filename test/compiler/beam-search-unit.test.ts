/**
 * BeamRow (the host side of beam search) on hand-made candidates, no tensors: which candidates
 * finish, how finished hypotheses are scored and ranked, and when a row is done for each
 * early_stopping setting.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BeamRow, type BeamOptions, type Candidate } from '../../src/compiler/beam-search.js';

const EOS = 9;

function row(o: Partial<BeamOptions> = {}): BeamRow {
  return new BeamRow({ numBeams: 2, maxNewTokens: 10, lengthPenalty: 1, earlyStopping: false, stopIds: [EOS], ...o });
}

/** Candidates from [score, beam, token] triples, which must be given best first. */
function cands(...xs: [number, number, number][]): Candidate[] {
  const out = xs.map(([score, beam, token]) => ({ score, beam, token }));
  for (let i = 1; i < out.length; i++) assert.ok(out[i - 1].score >= out[i].score, 'test candidates must be sorted');
  return out;
}

const doneHyps = (r: BeamRow) => r.finished.filter((h) => h.done).map((h) => ({ tokens: h.tokens, score: h.score }));

test('candidatesNeeded keeps max(2, 1 + #stop ids) candidates per beam, as Hugging Face does', () => {
  assert.equal(BeamRow.candidatesNeeded(2, 0), 4);
  assert.equal(BeamRow.candidatesNeeded(2, 1), 4);
  assert.equal(BeamRow.candidatesNeeded(3, 1), 6);
  assert.equal(BeamRow.candidatesNeeded(2, 3), 8);
});

test('only the first beam starts live, so the first step does not pick one token k times', () => {
  const r = row({ numBeams: 3 });
  assert.equal(r.runningScores[0], 0);
  assert.ok(r.runningScores.slice(1).every((s) => s <= -1e8));
});

test('an EOS candidate outside the top k never finishes; inside the top k it does, and never continues', () => {
  const outside = row();
  const s1 = outside.step(cands([-1, 0, 1], [-1.5, 0, 2], [-2, 0, EOS], [-3, 0, 3]), 0);
  assert.deepEqual(doneHyps(outside), [], 'EOS ranked 3rd of k=2 finished');
  assert.deepEqual(s1, { from: [0, 0], tokens: [1, 2] });
  assert.equal(outside.done, false);

  const inside = row();
  const s2 = inside.step(cands([-0.5, 0, EOS], [-1, 0, 1], [-1.5, 0, 2], [-3, 0, 3]), 0);
  assert.deepEqual(doneHyps(inside), [{ tokens: [EOS], score: -0.5 }]);
  assert.deepEqual(s2, { from: [0, 0], tokens: [1, 2] }, 'the running beams are the best non-EOS candidates');
  assert.deepEqual(inside.runningScores, [-1, -1.5]);
  assert.equal(inside.done, false, 'one of two hypotheses finished');
});

test('running beams follow their parents: tokens are appended to the beam a candidate extends', () => {
  const r = row();
  r.step(cands([-1, 0, 5], [-2, 0, 6], [-3, 0, 7], [-4, 0, 8]), 0);
  const s = r.step(cands([-2.5, 1, 3], [-2.6, 0, 4], [-3, 1, EOS], [-9, 0, 1]), 1);
  assert.deepEqual(s, { from: [1, 0], tokens: [3, 4] });
  assert.deepEqual(
    r.running.map((h) => h.tokens),
    [
      [6, 3],
      [5, 4],
    ],
  );
  assert.deepEqual(doneHyps(r), [], 'EOS ranked 3rd does not finish');
});

test('length_penalty: a hypothesis scores sum_logprobs / generated_len ** length_penalty (stop id included)', () => {
  // Hypothesis X ends at step 0 with sum -2; hypothesis Y at step 3 with sum -4.
  const run = (lp: number) => {
    const r = row({ lengthPenalty: lp, earlyStopping: 'never' });
    r.step(cands([-0.5, 0, 1], [-2, 0, EOS], [-2.1, 0, 2], [-5, 0, 3]), 0);
    r.step(cands([-1, 0, 4], [-2.6, 1, 5], [-7, 0, 6], [-8, 0, 7]), 1);
    r.step(cands([-2, 0, 8], [-3.1, 1, 10], [-9, 0, 11], [-9.5, 0, 12]), 2);
    r.step(cands([-4, 0, EOS], [-4.5, 0, 13], [-4.6, 1, 14], [-9, 0, 15]), 3);
    return r;
  };
  const flat = run(0); // scores are raw sums: X (-2) beats Y (-4)
  assert.deepEqual(flat.result(), { tokenIds: [EOS], finishReason: 'eos' });
  assert.deepEqual(doneHyps(flat), [
    { tokens: [EOS], score: -2 },
    { tokens: [1, 4, 8, EOS], score: -4 },
  ]);
  const linear = run(1); // X: -2 / 1 = -2, Y: -4 / 4 = -1: Y wins
  assert.deepEqual(linear.result(), { tokenIds: [1, 4, 8, EOS], finishReason: 'eos' });
  assert.deepEqual(doneHyps(linear), [
    { tokens: [1, 4, 8, EOS], score: -1 },
    { tokens: [EOS], score: -2 },
  ]);
  const square = run(2);
  assert.deepEqual(doneHyps(square)[0], { tokens: [1, 4, 8, EOS], score: -4 / 16 });
});

test('early_stopping true: done as soon as k hypotheses finished; false: only when running beams cannot win', () => {
  const steps = (r: BeamRow) => {
    r.step(cands([-0.4, 0, EOS], [-0.5, 0, 1], [-0.6, 0, 2], [-5, 0, 3]), 0); // one finishes: -0.4
    r.step(cands([-0.8, 0, 4], [-0.9, 1, EOS], [-1, 1, 5], [-6, 0, 6]), 1); // another: -0.9 / 2 = -0.45
  };
  const eager = row({ earlyStopping: true });
  steps(eager);
  assert.equal(doneHyps(eager).length, 2);
  assert.equal(eager.done, true, 'early_stopping true with k finished hypotheses');
  assert.deepEqual(eager.result(), { tokenIds: [EOS], finishReason: 'eos' });

  // early_stopping false: the best running beam (-0.8 over 2 tokens = -0.4) still beats the worst
  // finished (-0.45): not done.
  const patient = row({ earlyStopping: false });
  steps(patient);
  assert.equal(patient.done, false);
  // Next step the best running beam has -1.8 over 3 tokens = -0.6 < -0.45: done.
  patient.step(cands([-1.8, 0, 7], [-1.9, 1, 8], [-2, 0, 10], [-6, 0, 11]), 2);
  assert.equal(patient.done, true);
  assert.deepEqual(patient.result(), { tokenIds: [EOS], finishReason: 'eos' });
});

test("early_stopping 'never' with a positive length_penalty bounds running beams at max_new_tokens", () => {
  const r = row({ earlyStopping: 'never', maxNewTokens: 10 });
  r.step(cands([-0.4, 0, EOS], [-0.5, 0, 1], [-0.6, 0, 2], [-5, 0, 3]), 0);
  r.step(cands([-0.8, 0, 4], [-0.9, 1, EOS], [-1, 1, 5], [-6, 0, 6]), 1);
  // -1.8 / 10 = -0.18 could still beat -0.45 at full length: not done (false would be done here).
  r.step(cands([-1.8, 0, 7], [-1.9, 1, 8], [-2, 0, 10], [-6, 0, 11]), 2);
  assert.equal(r.done, false);
  // -5 / 10 = -0.5 < -0.45: nothing can win any more.
  r.step(cands([-5, 0, 12], [-5.1, 1, 13], [-6, 0, 14], [-7, 0, 15]), 3);
  assert.equal(r.done, true);
});

test('at max_new_tokens the top k candidates finish whatever their token, and the row is done', () => {
  const r = row({ maxNewTokens: 1 });
  r.step(cands([-1, 0, 1], [-2, 0, 2], [-3, 0, 3], [-4, 0, 4]), 0);
  assert.equal(r.done, true);
  assert.deepEqual(doneHyps(r), [
    { tokens: [1], score: -1 },
    { tokens: [2], score: -2 },
  ]);
  assert.deepEqual(r.result(), { tokenIds: [1], finishReason: 'length' });
});

test('after the heuristic says done, no later hypothesis is added', () => {
  const r = row({ earlyStopping: false });
  r.step(cands([-0.4, 0, EOS], [-0.5, 0, 1], [-0.6, 0, 2], [-5, 0, 3]), 0);
  r.step(cands([-0.8, 0, 4], [-0.9, 1, EOS], [-1, 1, 5], [-6, 0, 6]), 1);
  r.step(cands([-1.8, 0, 7], [-1.9, 1, 8], [-2, 0, 10], [-6, 0, 11]), 2);
  assert.equal(r.done, true);
  const before = doneHyps(r);
  // A caller that ignored `done` would still not get new finished hypotheses.
  r.step(cands([-0.1, 0, EOS], [-2, 1, 12], [-3, 0, 13], [-4, 0, 14]), 3);
  assert.deepEqual(doneHyps(r), before);
});
