# Slide preparation: demo phantom slides, tissue masks, and the slide QC table.


rule phantom:
    output:
        slide="results/phantom/{slide_id}.tiff",
        labels="results/phantom/{slide_id}.labels.png",
        meta="results/phantom/{slide_id}.json",
    params:
        label=slide_label,
        cross_scale=slide_cross_scale,
        settings=config["phantom"],
    group:
        "per_slide"
    resources:
        **rule_resources("phantom"),
    log:
        "logs/phantom/{slide_id}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/phantom.py"


rule tissue_mask:
    input:
        slide_input,
    output:
        mask="results/masks/{slide_id}.h5",
        qc=report(
            "results/masks/{slide_id}.qc.png",
            caption="../report/tissue_mask.rst",
            category="1. Slides",
            subcategory="Tissue masks",
            labels={"slide": "{slide_id}"},
        ),
    params:
        slide=slide_path,
        sheet_mpp=slide_mpp,
        brightfield_check=slide_brightfield_check,
        tissue=config["tissue"],
        tolerance=config["read"]["upsample_tolerance"],
        max_plain_megapixels=config["read"]["max_plain_image_megapixels"],
    group:
        "per_slide"
    resources:
        **rule_resources("tissue_mask"),
    log:
        "logs/tissue_mask/{slide_id}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/tissue_mask.py"


rule slide_qc_table:
    input:
        masks=expand("results/masks/{slide_id}.h5", slide_id=SLIDE_IDS),
    output:
        tsv="results/qc/slides.tsv",
        html=report(
            "results/qc/slides.html",
            caption="../report/slide_table.rst",
            category="1. Slides",
            subcategory="Overview",
        ),
    resources:
        **rule_resources("slide_qc_table"),
    log:
        "logs/slide_qc_table.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/slide_qc_table.py"


rule extract_tiles:
    input:
        slide_input,
        mask="results/masks/{slide_id}.h5",
    output:
        store="results/tiles/{tileset}/{slide_id}.h5",
    params:
        slide=slide_path,
        sheet_mpp=slide_mpp,
        tileset=lambda wildcards: config["tilesets"][wildcards.tileset],
        tolerance=config["read"]["upsample_tolerance"],
        max_plain_megapixels=config["read"]["max_plain_image_megapixels"],
    threads: config["extract"]["workers"]
    group:
        "per_slide"
    resources:
        **rule_resources("extract_tiles"),
    log:
        "logs/extract_tiles/{tileset}/{slide_id}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/extract_tiles.py"


rule tile_manifest:
    input:
        stores=expand("results/tiles/{{tileset}}/{slide_id}.h5", slide_id=SLIDE_IDS),
    output:
        tsv="results/tiles/{tileset}/manifest.tsv",
        html=report(
            "results/tiles/{tileset}/manifest.html",
            caption="../report/tile_manifest.rst",
            category="2. Tiles",
            labels={"tile set": "{tileset}"},
        ),
    params:
        splits=lambda wildcards: PLAN.slides.splits(),
    resources:
        **rule_resources("tile_manifest"),
    log:
        "logs/tile_manifest/{tileset}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/tile_manifest.py"
