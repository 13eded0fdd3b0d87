"""Default configuration: every field of sgfan-jax, documented.

Other configs import this module and override fields. Any field can be set on
the command line, e.g. ``--config.batch_size=20``.

Command (paper network, 300-W data; see configs/face300w.py for the paper run):

  python main.py --config configs/default.py --workdir /tmp/sgfan_default
"""

import ml_collections


def get_config():
  """Returns the default (paper) configuration."""
  config = ml_collections.ConfigDict()

  # ------------------------------------------------------------------ run
  config.seed = 0
  # Only evaluate: restore the best (else latest) checkpoint in workdir.
  config.eval_only = False
  # Print a line of metrics every this many steps (loss, grad norm, lr, img/s).
  config.log_every_steps = 50
  # Write TensorBoard event files (tensorboardX; no TensorFlow needed).
  config.write_tensorboard = True

  # ------------------------------------------------------------------ data
  config.data = ml_collections.ConfigDict()
  # TFDS builder name: 'face300w' or 'cofw' (custom builders in tfds_builders/).
  config.data.train_dataset = "face300w"
  config.data.train_split = "train"
  # Extra training data as 'builder:split' strings, concatenated with the
  # training split (same layout and crop geometry; e.g. ('ytf68:train',),
  # the YouTube Faces frames, tfds_builders/ytf68). The shape dictionary of
  # the refinement is built from the training split alone. () = none.
  # An epoch is then one pass over all of it: num_epochs, warmup_epochs,
  # lr_drop_epochs and eval.every_epochs count epochs of the union.
  config.data.extra_train_splits = ()
  # Evaluation datasets/splits as 'builder:split' strings.
  config.data.eval_splits = ("face300w:test_common", "face300w:test_challenging",
                             "face300w:test_full")
  # Split used for checkpoint selection ("best" checkpoint by NME). '' = none.
  # Never a reported test split: face300w:val is 5% of the 300-W training
  # faces held out by the builder (seeded by file name; not in 'train').
  config.data.val_split = "face300w:val"
  # TFDS data_dir; None = TFDS default (~/tensorflow_datasets).
  config.data.data_dir = ml_collections.config_dict.placeholder(str)
  # Landmark layout name (see sgfan_jax/layouts.py); sets N.
  config.data.layout = "ibug68"
  # Host-side loader workers (grain) and prefetch depth.
  config.data.num_workers = 2
  config.data.prefetch = 2
  # Network input window side / face box side (face box = landmark box, or
  # the dataset's box). The stored crops are larger (see the builders); the
  # window is cut out of them on device.
  config.data.face_context = 1.3

  # ----------------------------------------------------------- augmentation
  config.augment = ml_collections.ConfigDict()
  config.augment.rotation_deg = 30.0      # uniform in [-r, r]
  config.augment.scale_min = 0.9          # face size multiplier, uniform
  config.augment.scale_max = 1.2
  config.augment.translate_frac = 0.05    # shift, fraction of window side
  config.augment.flip_prob = 0.5          # horizontal flip with mirror perm
  config.augment.brightness = 0.2         # colour jitter amplitudes
  config.augment.contrast = 0.2
  config.augment.saturation = 0.2

  # -------------------------------------------------- synthetic occluders
  # Beyond the paper (sgfan_jax/occluders.py; configs/lite.py:occluded): on
  # device, after the augmentation above, paste one synthetic occluder per
  # image with probability prob (ellipse / rectangle / hand; colour, skin,
  # dark, noise or texture of another batch image) centred on the eyes, nose,
  # mouth or one jaw side, covering a fraction of the face box (landmark
  # box) uniform in [coverage_min, coverage_max]. 0 = off (the paper).
  config.occluders = ml_collections.ConfigDict()
  config.occluders.prob = 0.0
  config.occluders.coverage_min = 0.2
  config.occluders.coverage_max = 0.4
  # Score-map target of the points under an occluder: 'paper' (the disc for
  # every point, the occluder only changes pixels) or 'visibility' (0 for
  # occluded points: the score branch learns to detect occlusion). The
  # heatmap target is the paper's either way.
  config.occluders.score_target = "paper"

  # ------------------------------------------------------------------ model
  config.model = ml_collections.ConfigDict()
  config.model.input_size = 128           # input and output map side (px)
  config.model.width = 256                # feature width (paper: 256)
  config.model.hourglass_depth = 4        # hourglass levels (paper: 4)
  config.model.branch_channels = 128      # channels before the 1x1 head
  # Convolution implementation: 'xla' (stock lax.conv; best on GPU/TPU),
  # 'cpu' (matmul-based kernels tuned for XLA:CPU), 'auto' (= 'cpu' when the
  # default backend is CPU, else 'xla'). Same parameters and results.
  config.model.conv_impl = "auto"
  # Training compute dtype (parameters, optimiser state, BatchNorm
  # statistics and the loss are float32 in all): 'float32', 'bfloat16' (the
  # matrix products take bfloat16 operands, float32 accumulation;
  # sgfan_jax/conv.py) or 'auto' = the measured choice of the backend
  # (model.AUTO_DTYPE: bfloat16 on CPU, 1.16-1.20x faster, validation NME
  # within run-to-run noise in 2-epoch runs, BENCHMARKS.md "bfloat16";
  # float32 on GPU/TPU, not measured there).
  # The shipped model and the published numbers are float32:
  # --config.model.dtype=float32 reproduces them exactly.
  config.model.dtype = "auto"
  # Initial std of the two 1x1 heads relative to LeCun-normal. Small = maps
  # start near 0: Eq. 3 starts at the targets' energy, not at noise over
  # every pixel (see model.py). Not in the paper (PyTorch default init).
  config.model.head_init_scale = 0.01
  # Compute the residual block after each branch's 2x upsampling at low
  # resolution (conv.conv_upsampled2x): the same function and parameters as
  # upsample-then-block (checkpoints do not depend on it), less arithmetic.
  config.model.fuse_upsample = True
  # Input pixels per output-map pixel: 1 (the paper: 128x128 maps) or 2
  # (64x64 maps; the branches skip their upsampling: less compute in
  # training and prediction; project issue 18). Target and Eq. 1 geometry
  # (targets.*, refine.weight_radius) stay in input pixels.
  config.model.output_stride = 1

  # ---------------------------------------------------------------- targets
  config.targets = ml_collections.ConfigDict()
  config.targets.sigma = 1.5              # Gaussian heatmap std (px @128)
  config.targets.score_radius = 3         # r: score map disc radius (px @128)

  # ------------------------------------------------------------------- loss
  config.loss_lambda = 1.0                # Eq. 3 score-map weight lambda
  # Recipe variants (sgfan_jax/losses.py; issue 18). Defaults = Eq. 3.
  # 'mse' (Eq. 3) or 'awing' (Adaptive Wing, Wang et al. 2019).
  config.heatmap_loss = "mse"
  config.heatmap_fg_weight = 0.0          # MSE pixel weight 1 + w * target
  # Divide each term by its targets' energy (the all-zero prediction's loss).
  config.loss_normalize = False
  # Eq. 3 sums over pixels; divide by batch size so lr does not depend on it.
  config.loss_mean_over_batch = True

  # ------------------------------------------------------------- optimiser
  config.batch_size = 10
  config.num_epochs = 80
  # Steps override: > 0 trains exactly this many steps (tests, demos).
  config.num_train_steps = -1
  # 'rmsprop' (the paper; PyTorch's rule, optim.py) or 'adamw'.
  config.optimizer = "rmsprop"
  config.learning_rate = 1e-4             # peak rate for 'cosine'
  # 'step' (the paper: lr_drop_epochs / lr_drop_factor) or 'cosine' (linear
  # warm-up over warmup_epochs, cosine decay to lr * lr_end_factor).
  config.lr_schedule = "step"
  config.lr_drop_epochs = (20,)           # multiply lr by lr_drop_factor here
  config.lr_drop_factor = 0.5             # 1e-4 -> 5e-5 after 20 epochs
  config.warmup_epochs = 0.0
  config.lr_end_factor = 0.0
  config.weight_decay = 0.0               # AdamW decoupled decay (kernels)
  # RMSProp as in PyTorch's torch.optim.RMSprop defaults (see optim.py).
  config.rmsprop_decay = 0.99
  config.rmsprop_eps = 1e-8
  config.grad_clip_norm = 0.0             # 0 = no clipping (paper: none)

  # ---------------------------------------------------------------- decoding
  config.decode = ml_collections.ConfigDict()
  config.decode.subpixel = True           # Eq. 4 argmax + quadratic refine

  # -------------------------------------------------------------- refinement
  config.refine = ml_collections.ConfigDict()
  config.refine.enabled = True
  config.refine.dictionary_size = 200     # K-SVD atoms (shapes in D_S)
  # OMP non-zeros per training shape. 1-5 are within 5% of each other on the
  # held-out occlusion sweep (benchmarks/results/occlusion_experiment.md).
  config.refine.sparsity = 3
  config.refine.ksvd_iterations = 20
  config.refine.ksvd_seed = 0             # K-SVD initial-atom choice
  # Eq. 1 window half-width r (px @128). 2 = floor(score_radius / sqrt 2):
  # the largest square inside the score target disc, so a perfect score map
  # gives w = 1 (see sgfan_jax/confidence.py).
  config.refine.weight_radius = 2
  config.refine.num_neighbors = 20        # k nearest exemplars (Eq. 2)
  config.refine.weight_threshold = 0.5    # w below this = unreliable point
  config.refine.mode = "threshold"        # 'threshold' | 'blend'
  # Ridge on the Eq. 2 reconstruction coefficients (normalised frame; pulls
  # them towards the neighbours' average). 1e-2 was best of 1e-4..1e-1.
  config.refine.ridge = 1e-2

  # -------------------------------------------------------------- evaluation
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 10             # padded with a mask, never dropped
  config.eval.every_epochs = 1.0          # validation (for the best ckpt)
  config.eval.failure_threshold = 0.10    # NME above this = failure
  config.eval.auc_threshold = 0.08        # AUC up to this NME (300-W: 0.08)
  config.eval.num_vis_images = 8          # images with landmarks in report
  # Normalisation of the validation NME that picks the best checkpoint:
  # 'inter_pupil' (paper Table 1), 'inter_ocular' or 'bbox'.
  config.eval.val_normalization = "inter_pupil"
  # Evaluate with and without refinement (the report shows both).
  config.eval.splits_max_examples = -1    # > 0: first K faces of each split

  # ------------------------------------------------------ prediction (photos)
  # sgfan_jax.Landmarker and `python -m sgfan_jax.predict` (inference.py,
  # landmarker.py).
  config.predict = ml_collections.ConfigDict()
  # A point is reported occluded (face.occluded) when its Eq. 1 confidence is
  # below this. Chosen per model on face300w:val and its occluded copy
  # (scripts/calibrate_flags.py: the best F1 on the occluded copy among the
  # thresholds that flag <= 10 % of clean val points) and stored in the
  # model's config.json. None = refine.weight_threshold (models from before
  # the calibration). Independent of the refinement, which re-estimates the
  # points below refine.weight_threshold.
  config.predict.occluded_threshold = ml_collections.config_dict.placeholder(
      float)
  # Face verification: a detection whose face score (the mean Eq. 1
  # confidence of its points, face.face_score) is below this is not a face
  # and is dropped (predict --keep_all keeps it, marked is_face false).
  # Chosen per model on face300w:val faces (clean and occluded, jittered
  # boxes) and background boxes of training photos
  # (scripts/calibrate_face_score.py) and stored in its config.json.
  # None or 0 = off (models from before the calibration).
  config.predict.min_face_score = ml_collections.config_dict.placeholder(
      float)
  # Second pass (Landmarker(second_pass=)): each detected face is cropped
  # again on the tight box of its first-pass points and run again: one more
  # forward pass per face; protocol (b) vs (a) in docs/RESULTS.md.
  config.predict.second_pass = False
  # Most faces per jitted forward pass; fewer faces are padded only up to the
  # next power of two (1, 2, 4, 8), so one face costs a batch-1 pass.
  config.predict.batch_size = 8
  # Compute dtype of the prediction forward pass (Landmarker, predict
  # --precision): 'float32', 'bfloat16' (the products in bfloat16 with float32
  # accumulation, see sgfan_jax/conv.py) or 'auto' = the measured choice of
  # the backend (inference.AUTO_PRECISION; float32 where nothing is
  # measured). Independent of model.dtype, the training compute dtype.
  config.predict.precision = "auto"
  # Face detector (sgfan_jax/detectors.py): 'dlib_hog' (dlib's HOG frontal
  # detector, bundled in the dlib-bin wheel), 'blazeface' / 'blazeface_short'
  # (MediaPipe's full-range / short-range BlazeFace in Flax,
  # sgfan_jax/blazeface.py) or 'none' (the whole image is
  # one face crop). Its boxes are mapped to the training box convention (the
  # tight landmark box) by sgfan_jax/data/<detector>_box_map.json.
  # 'blazeface' (with the short-range pass below) ships: it finds 100 % of
  # the clean and 98 % of the occluded 300-W common-test faces, the
  # three-quarter camera.png, no patch on astronaut.png, at ~15 ms a photo;
  # dlib's HOG finds 98 % / 54 % (benchmarks/results/detectors*.md).
  config.predict.detector = "blazeface"
  config.predict.detector_upsample = 1    # dlib upsamplings (1: faces >~40 px)
  # Detect on a copy downscaled to this longer side (boxes scaled back; the
  # crop is taken at full resolution).
  config.predict.detector_max_side = 1024
  # Keep detections scoring above this (dlib's SVM margin; 0 = its default
  # operating point).
  config.predict.min_box_score = 0.0
  # BlazeFace options (detectors 'blazeface', 'blazeface_short'; measured in
  # benchmarks/results/detectors.md). Second pass on the photo padded to
  # twice its size, merged by NMS: the full-range model under-scores faces
  # that fill its input (close-up crops, occluded crops). Off: the
  # short-range pass below finds more of those faces (occluded copy 98.0 %
  # vs 92.4 %) with fewer false faces (2 vs 6 on 24 non-face photos,
  # benchmarks/results/detectors_short_pass.md).
  config.predict.blazeface_pad_pass = False
  # Keep detections whose sigmoid score is at least this: MediaPipe's Python
  # API default (min_detection_confidence = 0.5; its graphs use 0.6 for the
  # full-range and 0.5 for the short-range model).
  config.predict.blazeface_min_score = 0.5
  # The padded pass's threshold: 0.5 finds the most close-up / occluded
  # faces but lets half-size round objects through (coins.png: 5 false
  # faces); 0.6 finds none of those and fewer faces
  # (benchmarks/results/detectors.md). Section 2's landmark-confidence check
  # is meant to drop such boxes.
  config.predict.blazeface_pad_min_score = 0.5
  # Weighted-NMS overlap (IoU above this joins a group; MediaPipe's 0.3),
  # also used to merge the padded pass.
  config.predict.blazeface_iou_threshold = 0.3
  config.predict.blazeface_max_detections = 64  # faces kept per pass
  # A pass of the short-range model (128 px letterbox) merged in by NMS: made
  # for faces that fill the frame, it finds occluded close-ups the
  # full-range passes miss (benchmarks/results/detectors.md).
  # "always", "fallback" (only when the full-range pass finds no face) or
  # "off".
  config.predict.blazeface_short_pass = "always"
  config.predict.blazeface_short_min_score = 0.5
  # Tiles for small faces in large photos: the full-range model also runs on
  # a grid x grid of overlapping tiles of photos >= 640 px (0 = off).
  config.predict.blazeface_tile_grid = 0

  # ------------------------------------------------------------------- video
  # Landmarker.track and `predict clip.mp4` (sgfan_jax/tracking.py: tracking
  # and the One Euro filter; sgfan_jax/video.py: reading and writing video).
  config.video = ml_collections.ConfigDict()
  # Run the detector on the first frame and then every this many frames (its
  # boxes re-anchor the tracked faces and find new ones); in between each
  # face is cropped from the tight box of its previous points. 1 = detect on
  # every frame (no tracking); 0 = only when needed (no face, one lost).
  config.video.detect_every = 30
  # A face whose mean Eq. 1 confidence falls below this is looked for again
  # on the next frame, and ends there if no detection overlaps it (faces in
  # the shipped model's hands: 0.2-0.55 on 300-W test photos; a crop of
  # background: < 0.1).
  config.video.min_confidence = 0.2
  # A detection and a track (or two tracks) overlapping by this IoU or more
  # are the same face.
  config.video.iou_threshold = 0.3
  # A face with less than this fraction of its box inside the frame has left.
  config.video.min_inside = 0.5
  # Smoothing (on by default; predict --nosmooth turns it off): One Euro
  # filters (Casiez et al., CHI 2012) on each face's shape (its points in
  # its own frame) and pose (centre, scale, turn), tracking.FaceSmoother.
  config.video.smooth = True
  # Shape filter: cutoff at rest in Hz (lower = steadier) and its rise per
  # unit of speed (face sizes per second; the face size is the geometric
  # mean of the landmark box sides; higher = less lag on fast expressions).
  config.video.min_cutoff = 1.0
  config.video.beta = 10.0
  config.video.d_cutoff = 1.0             # Hz: cutoff of the speed estimates
  # Pose filter: the pose is fitted from all points, so far less noisy; a
  # fast filter keeps up with head motion (speed: face sizes per second for
  # the centre, relative zoom / turn rate for scale and rotation).
  config.video.pose_min_cutoff = 10.0
  config.video.pose_beta = 100.0
  # Frame rate assumed for frames without time stamps (arrays, PIL images).
  config.video.default_fps = 30.0

  # ------------------------------------------------------------- checkpoints
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 1000
  config.checkpoint.max_to_keep = 3       # latest checkpoints kept
  # ...plus the best one by validation NME (never deleted while best).
  # Start a run whose WORKDIR has no checkpoint from another run's: 'DIR'
  # (a training workdir: its latest checkpoint) or 'DIR:STEP'. The whole train state is taken (parameters,
  # BatchNorm statistics, optimiser state and step), so the schedule goes on
  # from that step, e.g. a fine-tuning stage with num_epochs beyond the
  # source run's (configs/lite.py:occluded_finetune). '' = from scratch.
  # Ignored once WORKDIR has a checkpoint (resuming wins).
  config.checkpoint.init_from = ""

  return config


