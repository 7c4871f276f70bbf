"""The examples at the end of each subcommand's ``--help``: one place to keep them current."""

EPILOGS = {
    "ingest": """examples:
  sslray ingest ./images ./stores/cells --tile-size 224
  sslray ingest ./slides_png s3://bucket/stores/crc --labels labels.csv --on-error skip
  sslray ingest ./mibi_fovs ./stores/mibi --layout channel-folders --tile-size 256
  sslray ingest ./slides s3://bucket/stores/tcga --mpp 0.5 --tile-size 224   # SVS/NDPI/pyramidal TIFF
  sslray ingest --config configs/ingest/cell_painting.yaml ./jump ./stores/jump compression=zstd

Every flag is a shortcut for the config key of its name (--tile-size 224 is tile_size=224); flags
override --config and key=value overrides win over both.

Labels come from class sub-folders (images/<label>/x.png) or from a CSV with columns
path,label[,group][,split]; group is the patient/slide id used for grouped splits.""",
    "pretrain": """examples:
  sslray pretrain --config configs/quickstart.yaml store=./out/store
  sslray pretrain --config configs/methods/dino.yaml store=s3://bucket/stores/crc \\
      train.num_workers=8 train.use_gpu=true run_dir=s3://bucket/runs tracking.uri=http://mlflow:5000

Re-running with the same name and run_dir resumes from the latest checkpoint.""",
    "embed": """examples:
  sslray embed --checkpoint ./out/checkpoints/quickstart-dino/checkpoint_<date> \\
      --store ./out/store --out ./out/embeddings/ssl     # the path `sslray pretrain` printed
  sslray embed --checkpoint s3://bucket/runs/ckpt --store s3://bucket/stores/crc \\
      --out s3://bucket/emb/crc num_actors=4 use_gpu=true
  sslray embed --checkpoint ./ckpt/phikon --slides s3://bucket/slides/ --mpp 0.5 --tile-size 224 \\
      --out s3://bucket/emb/phikon --on-error skip     # slides straight to embeddings, no tile store
  sslray embed --checkpoint ./ckpt/unidino --slides ./plate1 --layout channel-files \\
      '--channel-pattern=-ch(?P<channel>\\d+)' --tile-size 256 --stride 128 --empty-below 0.05 --out ./emb/plate1

Each store shard or slide is one partition, committed once: after a kill, run the same command
again and only the missing partitions are embedded. A progress line shows partitions, tiles/s, ETA.""",
    "evaluate": """examples:
  sslray evaluate --embeddings ./out/embeddings/ssl
  sslray evaluate --embeddings ./out/embeddings/ssl label_column=label group_column=patient \\
      'c_grid=[0.01,0.1,1]' 'label_fractions=[0.01,0.1,1.0]'
  sslray evaluate --protocol knn --embeddings ./out/embeddings/ssl 'k_grid=[10,20]'
  sslray evaluate --protocol mil --embeddings ./out/embeddings/phikon --bags slides.csv
  sslray evaluate --protocol mil --config configs/evaluate/mil.yaml --embeddings s3://b/emb/tcga \\
      --bags msi.csv 'heads=[abmil,transmil]' gpus_per_trial=0.25
  sslray evaluate --protocol survival --embeddings ./out/embeddings/phikon --bags survival.csv

group_column keeps a patient's (slide's) tiles on one side of every split; a named column must
exist. Unset, the splits group by the ingest's group column if every tile has one, else by
image_id (a warning says so). mil/survival group the tiles into bags by slide_id (else
patient_id, else image_id; bag_column=...), take labels from --bags (bag_id,label[,patient_id]
or bag_id,time,event[,patient_id]) or constant table columns, and keep each patient in one fold.
Results: RUN_DIR/results/PROTOCOL/NAME/results.json, results.md and pictures, and MLflow.""",
    "aggregate": """examples:
  sslray aggregate --embeddings ./out/embeddings/ssl --out ./out/spots
  sslray aggregate --config configs/aggregate/spot_dino.yaml --embeddings s3://b/emb/tma --out s3://b/spots/tma \
      spot_column=spot_id steps=2000""",
    "profile": """examples:
  sslray profile --embeddings ./out/embeddings/ssl --out ./out/profiles/ssl --metadata platemap.csv
  sslray profile --config configs/profile/cellpainting.yaml --embeddings s3://b/emb/jump --out s3://b/prof/jump \
      --metadata platemap.csv level=perturbation "control=Metadata_perturbation == 'DMSO'" normalize=[]

The plate map is a CSV keyed by plate + well (C03, c3 and r03c03 are one well) with any of
perturbation, control, batch, moa, target; its columns become Metadata_<name>. Without one, the
embeddings table's own columns are the metadata, and the plate is each source file's folder.
Output: profiles.parquet (normalised) and profiles_raw.parquet (before normalisation).""",
    "features": """examples:
  sslray features import ./phikon_features ./out/embeddings/phikon      # <slide>/features.npy (HistoSSLscaling)
  sslray features import ./clam/h5_files ./out/embeddings/uni --metadata slides.csv   # CLAM / TRIDENT *.h5
  sslray features import ./feats.parquet s3://b/emb/feats --format table slide_id_column=case feature_prefix=f_
  sslray evaluate --embeddings ./out/embeddings/phikon label_column=label group_column=patient_id

The layout is detected from SRC (or --format histossl|h5|table). --metadata is a CSV keyed by
slide_id whose other columns (patient_id, label, time, event...) are joined onto every tile.
The embeddings keep the values the tool wrote: they are not L2-normalised.""",
    "quickstart": """examples:
  sslray quickstart                                  # synthetic cell images, ~6 min on 2 cores
  sslray quickstart --data ./crc_tiles               # class sub-folders of 224-px tiles
  sslray quickstart --data ./tiles --labels labels.csv --out ./qs""",
    "submit": """examples:
  ray dashboard cluster/aws.yaml &                   # forwards the Jobs API to http://127.0.0.1:8265
  sslray submit quickstart
  sslray submit pretrain --config configs/methods/dino.yaml store=s3://b/stores/crc run_dir=s3://b/runs \
      train.num_workers=8 train.use_gpu=true --address http://127.0.0.1:8265
  sslray submit embed --no-wait --checkpoint s3://b/runs/checkpoints/dino/checkpoint_x --store s3://b/stores/crc \
      --out s3://b/emb/crc use_gpu=true

STAGE is one of jobs/ (ingest, pretrain, embed, evaluate, aggregate, quickstart); every other argument
goes to it unchanged (after a lone -- even --address would). This checkout is uploaded as the job's
working directory. MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL and AWS_DEFAULT_REGION travel with the job;
credentials never do (the nodes have their own). Exit status: 0 when the job succeeded.""",
    "methods": """example:
  sslray methods""",
    "store": """examples:
  sslray store info ./stores/cells          # tiles, channels, groups, size, per-channel stats
  sslray store verify s3://bucket/stores/crc  # recompute shard checksums; exit 1 naming damaged files""",
}
