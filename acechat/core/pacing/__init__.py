"""Pacing: how fast acechat calls a platform, in one family.

- `limits`: one platform allowance each (`TokenBucket`, `InFlightBucket`, `InFlightWindow`), kept per
  channel or workspace by `KeyedBudgets`;
- `scheduler`: the calls many answers make on those shared allowances, the most urgent first;
- `edits`: how often one answer edits its own message.
"""
