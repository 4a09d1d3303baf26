"""Audits: what each device leaks at its cut.

:mod:`.config` (what to run: attacks, images, seeds, presets), :mod:`.victims` (traces of what
crossed the cut), :mod:`.variants` (unaware and adaptive attackers), :mod:`.engine` (attack every
trace within its threat model), :mod:`.scoring` (metrics against ground truth), :mod:`.entry`
(audit a trained run or a bare model) and :mod:`.output` (tables and figures).
"""

from .config import ADAPTIVE_MODES, PRESETS, AuditConfig, AuditEnv
from .engine import AuditResult, audit_traces
from .entry import audit_model, audit_run, audit_trained
from .output import write_audit

__all__ = ["AuditConfig", "AuditEnv", "PRESETS", "ADAPTIVE_MODES", "AuditResult", "audit_traces", "audit_run",
           "audit_trained", "audit_model", "write_audit"]
