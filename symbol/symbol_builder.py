"""Assemble SSD graphs: backbone body -> extra layers -> multibox heads -> losses/detection.

The functions here take a validated configuration (see ``symbol_factory.get_config``); use
``symbol_factory.get_symbol_train`` / ``get_symbol`` unless you build configs by hand.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence

from config.mxnet_compat import mx

from symbol.common import multi_layer_feature, multibox_layer, with_mirrored_images

VARIANCES = (0.1, 0.1, 0.2, 0.2)
METRIC_EPS = 1e-8      # added to the probability before the log of the training cross-entropy


def get_body(backbone: str, backbone_args: dict | None = None) -> mx.sym.Symbol:
    """Build the trunk of ``symbol/<backbone>.py`` (its ``get_body(**backbone_args)``)."""
    module = importlib.import_module(f"symbol.{backbone}")
    return module.get_body(**(backbone_args or {}))


def build_heads(backbone: str, num_classes: int, from_layers: Sequence[str],
                num_filters: Sequence[int], strides: Sequence[int], pads: Sequence[int],
                sizes: Sequence[Sequence[float]], ratios: Sequence[Sequence[float]],
                normalizations: Sequence[float], steps: Sequence[float] = (),
                min_filter: int = 128, backbone_args: dict | None = None,
                extra_batchnorm: bool = False, fast_ops: bool = False, flip_test: bool = False
                ) -> tuple[mx.sym.Symbol, mx.sym.Symbol, mx.sym.Symbol]:
    """Body, extra layers and multibox heads.

    Parameters
    ----------
    backbone : str
        Module name under ``symbol/`` (``vgg16_reduced``, ``resnet``, ...).
    num_classes : int
        Object classes, background excluded.
    from_layers, num_filters, strides, pads, sizes, ratios, normalizations, steps, min_filter
        Per feature layer settings, see ``symbol_factory.get_config``.
    extra_batchnorm : bool
        BatchNorm in the extra layers (``symbol_factory.get_config``).
    backbone_args : dict, optional
        Keyword arguments of the backbone's ``get_body`` (``num_layers`` for resnet).
    fast_ops : bool
        Training-speed forms of the head (``symbol.common.multibox_layer``) and of the
        backbone where it has them (``symbol.resnet.strided_projection``).
    flip_test : bool
        Predict on every image and its left-right mirror and average the two in anchor space
        (``symbol.common.merge_mirrored``); ``data`` is still (B, 3, H, W). Inference only.

    Returns
    -------
    loc_preds : mx.sym.Symbol
        (B, 4N).
    cls_preds : mx.sym.Symbol
        (B, C+1, N) logits.
    anchors : mx.sym.Symbol
        (1, N, 4).
    """
    body = get_body(backbone, {**(backbone_args or {}), "fast_ops": True} if fast_ops
                    else backbone_args)
    if flip_test:                   # the same layers, on (2B, 3, H, W) image/mirror pairs
        body = body(data=with_mirrored_images(mx.sym.Variable("data")))
    layers = multi_layer_feature(body, from_layers, num_filters, strides, pads,
                                 min_filter=min_filter, extra_batchnorm=extra_batchnorm)
    return multibox_layer(layers, num_classes, sizes=sizes, ratios=ratios,
                          normalizations=normalizations, num_channels=num_filters,
                          steps=steps, clip=False, fast_ops=fast_ops, flip_test=flip_test)


def _detection(cls_prob: mx.sym.Symbol, loc_preds: mx.sym.Symbol, anchors: mx.sym.Symbol,
               nms_thresh: float, force_suppress: bool, nms_topk: int) -> mx.sym.Symbol:
    """MultiBoxDetection named ``detection`` -> (B, N, 6) [cls, score, x1, y1, x2, y2]."""
    return mx.sym.contrib.MultiBoxDetection(cls_prob, loc_preds, anchors, name="detection",
                                            nms_threshold=nms_thresh,
                                            force_suppress=force_suppress,
                                            variances=VARIANCES, nms_topk=nms_topk)


def get_symbol_train(num_classes: int, nms_thresh: float = 0.5, force_suppress: bool = False,
                     nms_topk: int = 400, with_det: bool = True,
                     minimum_negative_samples: int = 0, negative_mining_ratio: float = 3.0,
                     fast_ops: bool = False, **config) -> mx.sym.Symbol:
    """Training graph: ``cls_prob``, ``loc_loss``, ``cls_label`` and (``with_det``) ``det_out``.

    Parameters
    ----------
    num_classes : int
        Object classes, background excluded.
    nms_thresh, force_suppress, nms_topk
        MultiBoxDetection settings of ``det_out``.
    with_det : bool
        Add the ``det_out`` output (NMS on every forward); train with False, save with True.
    minimum_negative_samples : int
        MultiBoxTarget's minimum number of mined negatives per image (zhreshold's
        ``min_neg_samples``); above 0 images without objects also train the background.
    negative_mining_ratio : float
        Background anchors trained per matched anchor, the hardest first (3 as the original).
    fast_ops : bool
        Training-speed forms of the head, same parameters (``symbol.common.multibox_layer``);
        for the graph that is bound to train, not for the one that is saved.
    **config
        Network settings (see ``build_heads``).

    Returns
    -------
    mx.sym.Symbol
        Group of ``cls_prob`` (B, C+1, N), ``loc_loss`` (B, 4N), ``cls_label`` (B, N),
        ``det_out`` (B, N, 6) (``with_det``) and ``loss_sums`` (B, 3) (``fast_ops``, see
        :func:`loss_sums`). Input ``label``: (B, M, 5 or 6)
        ``[cls, x1, y1, x2, y2(, difficult)]`` normalised, rows of -1 as padding.
    """
    label = mx.sym.Variable("label")
    loc_preds, cls_preds, anchors = build_heads(num_classes=num_classes, fast_ops=fast_ops,
                                                **config)
    loc_target, loc_mask, cls_target = mx.sym.contrib.MultiBoxTarget(
        anchors, label, cls_preds, overlap_threshold=0.5, ignore_label=-1,
        negative_mining_ratio=negative_mining_ratio,
        minimum_negative_samples=minimum_negative_samples,
        negative_mining_thresh=0.5, variances=VARIANCES, name="multibox_target")

    cls_prob = mx.sym.SoftmaxOutput(data=cls_preds, label=cls_target, ignore_label=-1,
                                    use_ignore=True, grad_scale=1.0, multi_output=True,
                                    normalization="valid", name="cls_prob")
    loc_diff = mx.sym.elemwise_sub(loc_preds, loc_target, name="loc_diff")
    loc_diff = mx.sym.elemwise_mul(loc_mask, loc_diff, name="loc_masked_diff")
    loc_loss_ = mx.sym.smooth_l1(data=loc_diff, scalar=1.0, name="loc_loss_")
    loc_loss = mx.sym.MakeLoss(loc_loss_, grad_scale=1.0, normalization="valid",
                               name="loc_loss")
    # monitoring outputs: no gradient
    cls_label = mx.sym.MakeLoss(data=cls_target, grad_scale=0, name="cls_label")
    outputs = [cls_prob, loc_loss, cls_label]
    if with_det:
        det = _detection(cls_prob, loc_preds, anchors, nms_thresh, force_suppress, nms_topk)
        outputs.append(mx.sym.MakeLoss(data=det, grad_scale=0, name="det_out"))
    if fast_ops:
        outputs.append(loss_sums(cls_prob, loc_loss_, cls_target))
    return mx.sym.Group(outputs)


def loss_sums(cls_prob: mx.sym.Symbol, loc_loss: mx.sym.Symbol, cls_target: mx.sym.Symbol,
              eps: float = METRIC_EPS) -> mx.sym.Symbol:
    """Per-image sums of the training metric, computed in the graph: ``loss_sums`` (B, 3).

    Columns: the cross-entropy ``-sum(log(p[label] + eps))`` and the smooth-L1 sum over the
    image's anchors, and its count of non-ignored anchors (``cls_target >= 0``), the three
    sums ``MultiBoxMetric`` accumulates. Computed here they run in the forward pass's own
    operators; read from ``cls_prob`` on the host they cost a (B, C+1, N) copy and numpy work
    on every batch (issue 18). Row sums are products with a ones vector: MXNet's CPU
    ``sum(axis=1)`` of a (32, 8608) array takes 0.8 ms, the product 0.05 ms. No gradient
    flows through them.
    """
    def row_sums(x: mx.sym.Symbol) -> mx.sym.Symbol:                    # (B, K) -> (B,)
        ones = mx.sym.ones_like(mx.sym.slice_axis(x, axis=0, begin=0, end=1))    # (1, K)
        return mx.sym.reshape(mx.sym.dot(x, ones, transpose_b=True), shape=(-1,))

    prob = mx.sym.BlockGrad(cls_prob)                                   # (B, C+1, N)
    target = mx.sym.BlockGrad(cls_target)                               # (B, N), -1 ignored
    valid = target >= 0
    picked = mx.sym.pick(prob, mx.sym.relu(target), axis=1)            # (B, N)
    sums = [-row_sums(mx.sym.log(picked + eps) * valid),
            row_sums(mx.sym.BlockGrad(loc_loss)), row_sums(valid)]
    # stack, not Concat: MXNet 1.9's MKL-DNN Concat of 2-D arrays leaks memory every step
    return mx.sym.BlockGrad(mx.sym.stack(*sums, axis=1), name="loss_sums")


def get_symbol(num_classes: int, nms_thresh: float = 0.5, force_suppress: bool = False,
               nms_topk: int = 400, flip_test: bool = False, **config) -> mx.sym.Symbol:
    """Inference graph: softmax over classes + MultiBoxDetection.

    Parameters
    ----------
    num_classes : int
        Object classes, background excluded.
    nms_thresh, force_suppress, nms_topk
        MultiBoxDetection settings.
    flip_test : bool
        Average each image's predictions with its left-right mirror's before the detection
        (see ``build_heads``).
    **config
        Network settings (see ``build_heads``).

    Returns
    -------
    mx.sym.Symbol
        ``detection_output`` (B, N, 6) ``[cls, score, x1, y1, x2, y2]``, cls -1 = none.
    """
    loc_preds, cls_preds, anchors = build_heads(num_classes=num_classes, flip_test=flip_test,
                                                **config)
    cls_prob = mx.sym.softmax(data=cls_preds, axis=1, name="cls_prob")
    return _detection(cls_prob, loc_preds, anchors, nms_thresh, force_suppress, nms_topk)
