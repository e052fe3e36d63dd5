"""Which weights training starts from: ``--resume``, ``--finetune``, ``--pretrained`` or none.

Parameters are loaded by name through :mod:`checkpoint` (which converts the original
example's names); a resumed checkpoint must match the network exactly, while finetuning and
pretrained files load what fits and log what was skipped, unused and left to initialise.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from training import checkpoint
from symbol.legacy import describe_pretrained

logger = logging.getLogger(__name__)


def convert_pretrained(name: str, args: dict) -> dict:
    """Hook for renaming pretrained parameters (identity, as the original)."""
    return args


def _check_same_network(flag: str, path: str, arg_params: dict, aux_params: dict,
                        arg_shapes: dict, aux_shapes: dict, network: str) -> None:
    """Resume needs the exact network: every parameter present with its shape."""
    expected = {**arg_shapes, **aux_shapes}
    loaded = {**arg_params, **aux_params}
    missing = sorted(set(expected) - set(loaded))
    wrong = sorted(f"{k} {tuple(loaded[k].shape)} vs {expected[k]}"
                   for k in set(expected) & set(loaded) if tuple(loaded[k].shape) != expected[k])
    if missing or wrong:
        raise ValueError(f"{flag}: {path} was not saved by this network ({network} with these "
                         f"--num-class/--data-shape): missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, shape differs {wrong[:5]}; "
                         f"use --finetune or --pretrained to start from another model")


def _filter_by_shape(flag: str, path: str, params: dict, shapes: dict, network: str,
                     hint: str = "") -> tuple[dict, list[str], list[str]]:
    """Keep parameters whose name and shape match; returns (kept, skipped, unused)."""
    kept, skipped, unused = {}, [], []
    for name, value in params.items():
        if name not in shapes:
            unused.append(name)
        elif tuple(value.shape) != shapes[name]:
            skipped.append(f"{name} {tuple(value.shape)}->{shapes[name]}")
        else:
            kept[name] = value
    if params and not kept and not any(s.split(" ")[0] in shapes for s in skipped):
        raise ValueError(f"{flag}: {path} shares no parameter name with network {network} "
                         f"(it holds e.g. {sorted(params)[:3]}): a checkpoint of another "
                         f"network? Pass the matching --network" + (f". {hint}" if hint else ""))
    return kept, skipped, unused


def load_start_params(net: str, prefix: str, resume: int | str, finetune: int,
                      pretrained: str, epoch: int, begin_epoch: int, arg_shapes: dict,
                      aux_shapes: dict, freeze_layer_pattern: str) -> dict:
    """Decide where the weights come from and which parameters stay fixed.

    Returns
    -------
    dict
        ``arg_params``, ``aux_params``, ``fixed_param_names``, ``begin_epoch``,
        ``states_path`` (optimizer state to restore or None), ``source`` (text for the log).
    """
    out: dict[str, Any] = {"arg_params": None, "aux_params": None, "fixed_param_names": None,
                           "begin_epoch": begin_epoch, "states_path": None}
    freeze = _freeze_names(freeze_layer_pattern, arg_shapes)
    if resume == checkpoint.INTERRUPTED or (isinstance(resume, int) and resume >= 0):
        tag = resume
        path = checkpoint.checkpoint_path(prefix, tag, "params")
        args, auxs = checkpoint.load_arg_aux(path, f"--resume {resume}", prefix)
        card = checkpoint.load_card(prefix, tag) or {}
        if card.get("network") not in (None, net):
            raise ValueError(f"--resume {resume}: {path} was trained with --network "
                             f"{card['network']}, not {net}")
        _check_same_network(f"--resume {resume}", path, args, auxs, arg_shapes, aux_shapes, net)
        out.update(arg_params=args, aux_params=auxs, fixed_param_names=freeze or None,
                   states_path=checkpoint.checkpoint_path(prefix, tag, "states"),
                   begin_epoch=int(card.get("epoch", 0)) if tag == checkpoint.INTERRUPTED else tag)
        logger.info("Resume from %s: %d parameters, optimizer state %s, continuing after epoch "
                    "%d", path, len(args) + len(auxs), out["states_path"], out["begin_epoch"])
        return out
    if finetune >= 0 or pretrained:
        if finetune >= 0:
            flag, load_prefix, load_epoch = f"--finetune {finetune}", prefix, finetune
        else:
            flag, load_prefix, load_epoch = f"--pretrained {pretrained}", pretrained, epoch
        path = checkpoint.checkpoint_path(load_prefix, load_epoch, "params")
        # a pretrained file: say what it is and where the original documented it
        hint = describe_pretrained(net, path) if finetune < 0 else ""
        args, auxs = checkpoint.load_arg_aux(path, flag, load_prefix, hint)
        args = convert_pretrained(load_prefix, args)
        args, skipped_a, unused_a = _filter_by_shape(flag, path, args, arg_shapes, net, hint)
        auxs, skipped_x, unused_x = _filter_by_shape(flag, path, auxs, aux_shapes, net, hint)
        missing = sorted(set(arg_shapes) - set(args)) + sorted(set(aux_shapes) - set(auxs))
        logger.info("%s: loaded %d parameters from %s", flag, len(args) + len(auxs), path)
        if skipped_a or skipped_x:
            logger.info("Skipped (shape differs): %s", ", ".join(skipped_a + skipped_x))
        if unused_a or unused_x:
            logger.info("Not in this network (unused): %s", ", ".join(unused_a + unused_x))
        if missing:
            logger.info("Left to initialize: %s", ", ".join(missing))
        if finetune >= 0:
            # seed semantics: train what was not loaded with a matching shape, plus all *pred*
            fixed = sorted(name for name in args if "pred" not in name)
            out["begin_epoch"] = finetune
        else:
            fixed = freeze
        out.update(arg_params=args, aux_params=auxs, fixed_param_names=fixed or None)
        return out
    logger.info("Start training from scratch (no --pretrained, --resume or --finetune)")
    if freeze:
        logger.info("--freeze %r ignored: nothing is pretrained when training from scratch",
                    freeze_layer_pattern)
    return out


def _freeze_names(pattern: str, arg_shapes: dict) -> list[str]:
    if not pattern or not pattern.strip():
        return []
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"--freeze {pattern!r}: not a valid regular expression ({err})") from None
    return [name for name in arg_shapes if regex.match(name)]
