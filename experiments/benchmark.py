"""MRM against its peers on one protocol (the same as ``mrm bench``).

    python experiments/benchmark.py --config configs/synthetic.yaml \
        --methods global per_user finetune lore pal vpl mrm mrm_rpo --seeds 0 1 2 --out DIR

Writes DIR/results.json, DIR/results.md and DIR/shots.png; see
:mod:`mrm_lightning.bench.harness`.
"""

from mrm_lightning.cli.bench import main

if __name__ == "__main__":
    main()
