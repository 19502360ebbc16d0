"""Regenerate lab 02's mutants and alternative from the current ``solution.py``.

Lab 02's solution keeps growing (two parts, engine details), and every mutant is a full copy of
it with one classic bug, so the copies go stale. Each variant here is a list of exact
``(old, new)`` edits; an edit whose ``old`` text no longer occurs exactly once stops the run
and names the variant, so a change to the solution cannot silently turn a mutant into a copy.

    python -m grading.lab02_variants        # then: make check-suite
"""

from __future__ import annotations

from pathlib import Path

from labkit.loader import LABS_DIR

LAB = "lab-02-serve-many-loras"
SOLUTION = LABS_DIR / LAB / "solution.py"
GRADING = Path(__file__).resolve().parent
Edits = list[tuple[str, str]]

MUTANTS: dict[str, tuple[str, Edits]] = {
    # part 1: the offline engine
    "reconciliation_ignores_units": (
        "reconcile converts derived bytes to decimal GB (1e9) before comparing with the GiB the "
        "engine logs",
        [("    derived = derived_bytes / 2**30\n", "    derived = derived_bytes / 1e9\n")]),
    "eval_diff_compares_only_lengths": (
        "eval_diff counts two outputs as identical when they have the same length",
        [('        if a["output"] != b["output"]:\n',
          '        if len(a["output"]) != len(b["output"]):\n')]),
    "precision_slack_of_a_whole_gib": (
        "a logged GiB figure agrees with anything within half a GiB, ignoring the two decimals "
        "printed",
        [("        decimals = len(self.text.partition(\".\")[2])\n"
          "        return 0.5 * 10.0 ** -max(decimals, GIB_DECIMALS)\n", "        return 0.5\n")]),
    "cpu_engine_unbounded": (
        "build_llm leaves the CPU build's KV cache unbounded (vLLM sizes it from the machine's RAM)",
        [('        kwargs |= {"kv_cache_memory_bytes": CPU_KV_CACHE_BYTES, "dtype": CPU_DTYPE,\n'
          '                   "max_model_len": CPU_MAX_MODEL_LEN}\n',
          '        kwargs |= {"dtype": CPU_DTYPE, "max_model_len": CPU_MAX_MODEL_LEN}\n')]),
    "one_generate_call_per_row": (
        "generate_mixed sends each row in its own generate call, so the batch is never mixed",
        [("    outputs = llm.generate(prompts, sampling, lora_request=adapters, use_tqdm=False)\n",
          "    outputs = [llm.generate([p], sampling, lora_request=[a], use_tqdm=False)[0]\n"
          "               for p, a in zip(prompts, adapters, strict=True)]\n")]),
    "empty_output_counts_as_executable": (
        "sql_executes calls any text that sqlite3 accepts executable, the empty answer included",
        [("        return cursor.description is not None  # None: nothing was queried\n",
          "        return True\n")]),
    "tags_shifted_by_one_row": (
        "generate_mixed passes the tags rotated by one row, so each prompt runs under its "
        "neighbour's adapter",
        [("    outputs = llm.generate(prompts, sampling, lora_request=adapters, use_tqdm=False)\n",
          "    outputs = llm.generate(prompts, sampling, lora_request=adapters[1:] + adapters[:1],\n"
          "                           use_tqdm=False)\n")]),
    # part 2: the serving surface
    "cold_slot_first_touch": (
        "cold_slot_signature labels a request cold only the first time its adapter appears, so "
        "evictions (slot thrash) never count as cold",
        [('    hits = np.asarray(load_lab("lab-04").replay(list(trace), num_slots), dtype=bool)',
          "    seen: set = set()\n"
          "    hits = np.asarray([a is None or a in seen or seen.add(a) is not None "
          "for a in trace],\n                      dtype=bool)")]),
    "tail_share_over_all_requests": (
        "cold_slot_signature reports the cold share of all requests instead of the share of the "
        "p99 tail that is cold",
        [("        tail_cold_share=float((tail & ~hits).sum() / tail.sum()),",
          "        tail_cold_share=float((~hits).sum() / len(hits)),")]),
    "interpolated_percentiles": (
        "percentile_ms interpolates between samples (numpy's default) instead of taking the "
        "nearest rank, so a p99 is not a latency any request had",
        [('    return float(np.percentile(latencies_ms, q, method="inverted_cdf"))',
          "    return float(np.percentile(latencies_ms, q))")]),
    "base_requests_cold": (
        "cold_slot_signature counts base-model requests (None) as cold although they never wait "
        "for an adapter load",
        [('    hits = np.asarray(load_lab("lab-04").replay(list(trace), num_slots), dtype=bool)',
          '    hits = np.asarray(load_lab("lab-04").replay(list(trace), num_slots), dtype=bool)\n'
          "    hits &= np.array([a is not None for a in trace], dtype=bool)")]),
    "binds_all_interfaces": (
        "serve_argv binds 0.0.0.0 by default, exposing runtime adapter loading to the network",
        [("               host: str = LOOPBACK, served_model_name: str | None = None,",
          '               host: str = "0.0.0.0", served_model_name: str | None = None,')]),
    "adapter_errors_swallowed": (
        "load_adapter/unload_adapter return the error body of a non-2xx answer instead of "
        "raising with its status and message",
        [("        raise AdapterRequestError(url, err.code, _server_message(err.read())) from None",
          "        return _server_message(err.read())")]),
}

ALTERNATIVES: dict[str, tuple[str, Edits]] = {
    "printed_digits": (
        "Alternative lab 02: reconcile prints each derived GiB figure the way vLLM prints it and "
        "compares digits; the safetensors header is unpacked with struct",
        [("    derived = derived_bytes / 2**30\n"
          "    agrees = abs(logged.value - derived) <= logged.half_unit + 1e-12\n",
          "    derived = derived_bytes / 2**30\n"
          "    decimals = max(len(logged.text.partition(\".\")[2]), GIB_DECIMALS)\n"
          "    # vLLM prints \"%.2f\" or str(round(x, 2)): print the derived figure both ways.\n"
          "    printed = {f\"{derived:.{decimals}f}\", str(round(derived, decimals))}\n"
          "    agrees = logged.text in printed or f\"{logged.value:.{decimals}f}\" in printed\n"),
         ('        size = int.from_bytes(f.read(8), "little")\n',
          '        (size,) = struct.unpack("<Q", f.read(8))\n'),
         ("import sqlite3\n", "import sqlite3\nimport struct\n")]),
}


def apply(source: str, name: str, first_line: str, edits: Edits) -> str:
    """``source`` with each edit applied once and ``first_line`` heading its docstring."""
    for old, new in edits:
        if source.count(old) != 1:
            raise SystemExit(f"{name}: expected the edited text exactly once in solution.py, "
                             f"found it {source.count(old)} times: {old.strip()[:70]!r}")
        source = source.replace(old, new)
    if not source.startswith('"""'):
        raise SystemExit("solution.py: expected a module docstring")
    return f'"""{first_line}.\n\n' + source[3:]


def main() -> None:
    source = SOLUTION.read_text()
    for folder, variants, prefix in ((GRADING / "mutants" / LAB, MUTANTS, "Mutant: "),
                                     (GRADING / "alternatives" / LAB, ALTERNATIVES, "")):
        folder.mkdir(parents=True, exist_ok=True)
        for name, (line, edits) in variants.items():
            (folder / f"{name}.py").write_text(apply(source, name, prefix + line, edits))
            print(f"wrote {folder.relative_to(GRADING.parent) / name}.py")


if __name__ == "__main__":
    main()
