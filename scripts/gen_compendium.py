#!/usr/bin/env python3
"""Deterministic generator of the synthetic sample compendium (no dependencies).

Writes into testdata/compendium/ (or OUT):
  tests_v1.csv, panels_v1.csv   version 1: ~330 tests, 12 client custom panels
  tests_v2.csv, panels_v2.csv   version 2: price changes, discontinued tests with
                                replacements, new tests, a removed test, an AOE
                                change, panel price/component changes, a new and a
                                removed panel
  emr_northwind.csv             EMR code map (CSV, lab_code,emr_code)
  emr_riverside.json            EMR code map (JSON, [{"lab_code","emr_code"}])
  orders.jsonl                  LabOrder JSON (the hl7-core contract), one per line,
                                each with the problems `validate` must find
  orders.hl7                    the same orders as OML^O21 v2.5.1 (LOI base profile
                                `loi-oml-o21`), ordered by client ACCT1001; the second
                                orders another client's panel

Everything is synthetic: lab codes, prices, client accounts and panels are
invented; LOINC and CPT codes are the public codes of common tests (left empty
where a test has none). Same seed, same bytes.

Usage:  python3 scripts/gen_compendium.py [OUT] [--seed S]
"""
import argparse
import csv
import io
import json
import os
import random

TEST_HEADER = ["code", "name", "loinc", "cpt", "specimen", "container", "volume", "storage",
               "turnaround", "price", "status", "effective_from", "replaced_by", "aoe"]
PANEL_HEADER = ["code", "name", "client_account", "price", "components"]

SST = "SST (gold top)"
LAV = "Lavender top (EDTA)"
BLUE = "Light blue top (citrate)"
GRAY = "Gray top (fluoride)"
GREEN = "Green top (heparin)"
CUP = "Sterile urine cup"
SWAB = "Swab in transport medium"
STOOL = "Stool transport vial"
URINE24 = "24-hour urine container"

# AOE questions: (code, question, type, required); type list=... carries the answers.
FASTING = ("49541-6", "Fasting status", "yes_no", "Y")
SOURCE = ("SRC", "Specimen source", "list=THROAT|NASOPHARYNX|WOUND|URINE|SPUTUM", "Y")
VOL24 = ("VOL24", "24-hour urine volume (mL)", "number", "Y")
LMP = ("8665-2", "Last menstrual period start date", "date", "N")
DOSE = ("LASTDOSE", "Date and time of last dose", "text", "N")
PREG = ("PREG", "Pregnant?", "yes_no", "N")
COLLDUR = ("COLLDUR", "Collection duration (hours)", "number", "Y")
HEIGHT = ("HT", "Patient height (cm)", "number", "N")
ANTICOAG = ("ANTICOAG", "Anticoagulant therapy", "list=NONE|WARFARIN|HEPARIN|DOAC", "Y")

# Common tests: (name, loinc, cpt, specimen, container, volume, storage, turnaround, price, aoe)
COMMON = [
    ("Glucose", "2345-7", "82947", "SER", SST, "1 mL", "Refrigerated", "1 day", "12.50", [FASTING]),
    ("Hemoglobin A1c", "4548-4", "83036", "WB", LAV, "2 mL", "Refrigerated", "1 day", "28.00", []),
    ("Basic metabolic panel", "51990-0", "80048", "SER", SST, "1 mL", "Refrigerated", "1 day", "24.00", [FASTING]),
    ("Comprehensive metabolic panel", "24323-8", "80053", "SER", SST, "1 mL", "Refrigerated", "1 day", "32.00", [FASTING]),
    ("Lipid panel", "24331-1", "80061", "SER", SST, "1 mL", "Refrigerated", "1 day", "38.00", [FASTING]),
    ("CBC with differential", "57021-8", "85025", "WB", LAV, "3 mL", "Refrigerated", "1 day", "18.00", []),
    ("CBC without differential", "58410-2", "85027", "WB", LAV, "3 mL", "Refrigerated", "1 day", "15.00", []),
    ("TSH", "3016-3", "84443", "SER", SST, "1 mL", "Refrigerated", "1 day", "35.00", []),
    ("Free T4", "3024-7", "84439", "SER", SST, "1 mL", "Refrigerated", "1 day", "30.00", []),
    ("Free T3", "3051-0", "84481", "SER", SST, "1 mL", "Refrigerated", "2 days", "42.00", []),
    ("Vitamin D, 25-hydroxy", "62292-8", "82306", "SER", SST, "1 mL", "Refrigerated", "2 days", "55.00", []),
    ("Vitamin B12", "2132-9", "82607", "SER", SST, "1 mL", "Frozen", "2 days", "36.00", []),
    ("Folate", "2284-8", "82746", "SER", SST, "1 mL", "Frozen", "2 days", "34.00", []),
    ("Ferritin", "2276-4", "82728", "SER", SST, "1 mL", "Refrigerated", "1 day", "29.00", []),
    ("Iron and TIBC", "2498-4", "83540", "SER", SST, "1 mL", "Refrigerated", "1 day", "26.00", [FASTING]),
    ("Magnesium", "19123-9", "83735", "SER", SST, "1 mL", "Refrigerated", "1 day", "14.00", []),
    ("Uric acid", "3084-1", "84550", "SER", SST, "1 mL", "Refrigerated", "1 day", "13.00", []),
    ("Creatinine", "2160-0", "82565", "SER", SST, "1 mL", "Refrigerated", "1 day", "11.00", []),
    ("Hepatic function panel", "24325-3", "80076", "SER", SST, "1 mL", "Refrigerated", "1 day", "22.00", []),
    ("PSA, total", "2857-1", "84153", "SER", SST, "1 mL", "Refrigerated", "1 day", "40.00", []),
    ("hCG, quantitative", "21198-7", "84702", "SER", SST, "1 mL", "Refrigerated", "1 day", "31.00", [LMP]),
    ("Prothrombin time with INR", "5902-2", "85610", "PLAS", BLUE, "2.7 mL", "Room temperature", "1 day", "12.00", [ANTICOAG]),
    ("Activated PTT", "3173-2", "85730", "PLAS", BLUE, "2.7 mL", "Room temperature", "1 day", "14.00", [ANTICOAG]),
    ("Fibrinogen", "3255-7", "85384", "PLAS", BLUE, "2.7 mL", "Frozen", "2 days", "27.00", []),
    ("D-dimer", "48065-7", "85379", "PLAS", BLUE, "2.7 mL", "Frozen", "1 day", "45.00", []),
    ("Urinalysis, complete", "24356-8", "81001", "UR", CUP, "10 mL", "Refrigerated", "1 day", "9.00", []),
    ("Urine culture", "630-4", "87086", "UR", CUP, "10 mL", "Refrigerated", "3 days", "29.00", []),
    ("Urine microalbumin", "14959-1", "82043", "UR", CUP, "10 mL", "Refrigerated", "2 days", "21.00", []),
    ("Protein, 24-hour urine", "2889-4", "84156", "UR", URINE24, "10 mL", "Refrigerated", "3 days", "24.00", [VOL24, COLLDUR]),
    ("Creatinine clearance", "2164-2", "82575", "UR", URINE24, "10 mL", "Refrigerated", "3 days", "33.00", [VOL24, COLLDUR, HEIGHT]),
    ("Throat culture, strep A", "626-2", "87081", "THRT", SWAB, "1 swab", "Room temperature", "2 days", "25.00", [SOURCE]),
    ("Strep A antigen, rapid", "78012-2", "87880", "THRT", SWAB, "1 swab", "Room temperature", "4 hours", "19.00", []),
    ("Influenza A and B, PCR", "92142-9", "87502", "NASP", SWAB, "1 swab", "Refrigerated", "1 day", "85.00", []),
    ("SARS-CoV-2, PCR", "94500-6", "87635", "NASP", SWAB, "1 swab", "Refrigerated", "1 day", "75.00", []),
    ("Aerobic culture", "6463-4", "87070", "", SWAB, "1 swab", "Room temperature", "3 days", "32.00", [SOURCE]),
    ("Stool culture", "625-4", "87045", "STL", STOOL, "5 g", "Refrigerated", "3 days", "41.00", []),
    ("Occult blood, stool", "2335-8", "82272", "STL", STOOL, "5 g", "Room temperature", "1 day", "8.00", []),
    ("Helicobacter pylori antigen, stool", "17780-8", "87338", "STL", STOOL, "5 g", "Frozen", "2 days", "48.00", []),
    ("Digoxin", "10535-3", "80162", "SER", "Red top (no gel)", "1 mL", "Refrigerated", "1 day", "37.00", [DOSE]),
    ("Lithium", "14334-7", "80178", "SER", "Red top (no gel)", "1 mL", "Refrigerated", "1 day", "22.00", [DOSE]),
    ("Vancomycin, trough", "4092-3", "80202", "SER", "Red top (no gel)", "1 mL", "Frozen", "1 day", "44.00", [DOSE]),
    ("Lactic acid", "2524-7", "83605", "PLAS", GRAY, "1 mL", "Frozen", "4 hours", "23.00", []),
    ("Ammonia", "16362-6", "82140", "PLAS", GREEN, "1 mL", "Frozen", "4 hours", "35.00", []),
    ("C-reactive protein", "1988-5", "86140", "SER", SST, "1 mL", "Refrigerated", "1 day", "17.00", []),
    ("Sedimentation rate", "4537-7", "85652", "WB", LAV, "3 mL", "Room temperature", "1 day", "9.00", []),
    ("Rheumatoid factor", "11572-5", "86431", "SER", SST, "1 mL", "Refrigerated", "2 days", "19.00", []),
    ("ANA screen", "8061-4", "86038", "SER", SST, "1 mL", "Refrigerated", "3 days", "39.00", []),
    ("Hepatitis B surface antigen", "5196-1", "87340", "SER", SST, "1 mL", "Refrigerated", "2 days", "27.00", [PREG]),
    ("Hepatitis C antibody", "16128-1", "86803", "SER", SST, "1 mL", "Refrigerated", "2 days", "29.00", []),
    ("HIV-1/2 antigen and antibody", "56888-1", "87389", "SER", SST, "1 mL", "Refrigerated", "2 days", "33.00", [PREG]),
    ("Syphilis (RPR)", "20507-0", "86592", "SER", SST, "1 mL", "Refrigerated", "2 days", "12.00", [PREG]),
    ("Testosterone, total", "2986-8", "84403", "SER", SST, "1 mL", "Refrigerated", "2 days", "46.00", []),
    ("Estradiol", "2243-4", "82670", "SER", SST, "1 mL", "Frozen", "2 days", "49.00", [LMP]),
    ("Cortisol, AM", "2143-6", "82533", "SER", SST, "1 mL", "Refrigerated", "1 day", "38.00", []),
    ("Insulin", "20448-7", "83525", "SER", SST, "1 mL", "Frozen", "2 days", "35.00", [FASTING]),
    ("Homocysteine", "13965-9", "83090", "PLAS", LAV, "1 mL", "Frozen", "3 days", "52.00", [FASTING]),
    ("Lipase", "3040-3", "83690", "SER", SST, "1 mL", "Refrigerated", "1 day", "16.00", []),
    ("Amylase", "1798-8", "82150", "SER", SST, "1 mL", "Refrigerated", "1 day", "15.00", []),
    ("Troponin I", "10839-9", "84484", "PLAS", GREEN, "1 mL", "Frozen", "4 hours", "44.00", []),
    ("BNP", "30934-4", "83880", "PLAS", LAV, "1 mL", "Frozen", "1 day", "58.00", []),
]

ALLERGENS = [
    "Cat dander", "Dog dander", "Horse dander", "Cow dander", "Guinea pig epithelium", "Rabbit epithelium",
    "Mouse urine proteins", "House dust mite (D. pteronyssinus)", "House dust mite (D. farinae)", "Cockroach, German",
    "Cockroach, American", "Alternaria alternata", "Aspergillus fumigatus", "Cladosporium herbarum",
    "Penicillium notatum", "Candida albicans", "Timothy grass", "Bermuda grass", "Johnson grass", "Kentucky bluegrass",
    "Orchard grass", "Perennial ryegrass", "Sweet vernal grass", "Bahia grass", "Ragweed, short", "Ragweed, giant",
    "Mugwort", "English plantain", "Lamb's quarters", "Pigweed", "Russian thistle", "Sheep sorrel", "Nettle",
    "Oak", "Birch", "Maple, box elder", "Elm", "Cottonwood", "Walnut", "Pecan", "Mountain cedar", "Olive tree",
    "Ash, white", "Sycamore", "Mulberry", "Hickory", "Pine, white", "Eucalyptus", "Acacia", "Privet",
    "Egg white", "Egg yolk", "Milk", "Casein", "Alpha-lactalbumin", "Beta-lactoglobulin", "Peanut", "Soybean",
    "Wheat", "Gluten", "Rye", "Barley", "Oat", "Corn", "Rice", "Buckwheat", "Sesame seed", "Mustard",
    "Almond", "Brazil nut", "Cashew", "Hazelnut", "Macadamia nut", "Pistachio", "Walnut (food)", "Pecan (food)",
    "Codfish", "Salmon", "Tuna", "Shrimp", "Crab", "Lobster", "Clam", "Oyster", "Scallop", "Beef", "Pork",
    "Chicken", "Turkey", "Lamb", "Tomato", "Potato", "Carrot", "Celery", "Garlic", "Onion", "Apple", "Banana",
    "Kiwi", "Orange", "Peach", "Strawberry", "Avocado", "Cocoa", "Coffee", "Latex", "Honey bee venom",
    "Yellow jacket venom", "Wasp venom", "Fire ant", "Mosquito", "Penicilloyl G", "Penicilloyl V", "Amoxicillin",
    "Ampicillin", "Cefaclor", "Chlorhexidine", "Insulin, human", "Gelatin", "Silk", "Feathers, chicken",
    "Feathers, duck", "Feathers, goose", "Tobacco leaf", "Cotton seed", "Flax seed", "Sunflower seed",
    "Pumpkin", "Chickpea", "Lentil", "Pea", "Green bean", "White bean", "Lupin", "Quinoa", "Coconut", "Mango",
    "Pineapple", "Melon", "Watermelon", "Grape", "Cherry", "Pear", "Plum", "Apricot",
]

ANTIBODIES = [
    ("Measles IgG", "86765"), ("Mumps IgG", "86735"), ("Rubella IgG", "86762"), ("Varicella zoster IgG", "86787"),
    ("Hepatitis A IgG", "86708"), ("Hepatitis B surface antibody", "86706"), ("Cytomegalovirus IgG", "86644"),
    ("Epstein-Barr virus VCA IgG", "86665"), ("Toxoplasma IgG", "86777"), ("Lyme disease antibody", "86618"),
    ("Herpes simplex 1 IgG", "86695"), ("Herpes simplex 2 IgG", "86696"), ("Mycoplasma pneumoniae IgM", "86738"),
    ("Parvovirus B19 IgG", "86747"), ("West Nile virus IgM", "86789"), ("Tetanus antitoxoid IgG", "86317"),
    ("Diphtheria antitoxoid IgG", "86317"), ("Thyroid peroxidase antibody", "86376"), ("Thyroglobulin antibody", "86800"),
    ("Tissue transglutaminase IgA", "83516"), ("Anti-CCP antibody", "86200"), ("dsDNA antibody", "86225"),
]

DRUGS = [
    "Amphetamines", "Barbiturates", "Benzodiazepines", "Buprenorphine", "Cannabinoids", "Cocaine metabolite",
    "Fentanyl", "Methadone", "Methamphetamine", "Opiates", "Oxycodone", "Phencyclidine", "Tramadol",
    "Carisoprodol", "Gabapentin", "Ethyl glucuronide", "Tapentadol", "Meperidine", "Propoxyphene", "Zolpidem",
]

LEAD_PURPOSE = ("LEADPURP", "Blood lead purpose", "list=INITIAL|REPEAT|FOLLOWUP", "Y")

# Trace elements and vitamins: (name, cpt, specimen, container, aoe)
ROYAL = "Royal blue top (trace element)"
ELEMENTS = [
    ("Zinc", "84630", "PLAS", ROYAL, []), ("Copper", "82525", "SER", ROYAL, []), ("Selenium", "84255", "SER", ROYAL, []),
    ("Lead, blood", "83655", "WB", ROYAL, [LEAD_PURPOSE]), ("Mercury, blood", "83825", "WB", ROYAL, []),
    ("Arsenic, urine", "82175", "UR", CUP, [COLLDUR]), ("Vitamin A", "84590", "SER", SST, [FASTING]),
    ("Vitamin E", "84446", "SER", SST, [FASTING]), ("Vitamin B1 (thiamine)", "84425", "WB", LAV, []),
    ("Vitamin B6", "84207", "PLAS", LAV, []), ("Vitamin C", "82180", "PLAS", GREEN, []),
    ("Vitamin K1", "84597", "SER", SST, [FASTING]), ("Chromium", "82495", "SER", ROYAL, []),
    ("Cobalt", "83018", "SER", ROYAL, []), ("Manganese", "83785", "WB", ROYAL, []), ("Aluminum", "82108", "SER", ROYAL, []),
]

CLIENTS = ["ACCT1001", "ACCT1002", "ACCT1003", "ACCT1004", "ACCT1005", "ACCT1006"]
PRACTICES = ["Riverside Family Medicine", "Northwind Pediatrics", "Lakeview Internal Medicine",
             "Harbor Women's Health", "Summit Cardiology", "Maple Street Clinic"]


def money(x):
    return "%.2f" % x


def aoe_cell(items):
    return ";".join(":".join(i) for i in items)


def make_v1(rng):
    tests = []
    code = 100000

    def add(name, loinc, cpt, spec, cont, vol, stor, tat, price, aoe, status="active", repl=""):
        nonlocal code
        code += rng.choice([7, 11, 13, 17, 19])
        eff = "2023-%02d-%02d" % (rng.randint(1, 12), rng.randint(1, 28))
        tests.append({
            "code": str(code), "name": name, "loinc": loinc, "cpt": cpt, "specimen": spec, "container": cont,
            "volume": vol, "storage": stor, "turnaround": tat, "price": price, "status": status,
            "effective_from": eff, "replaced_by": repl, "aoe": aoe_cell(aoe),
        })

    for (name, loinc, cpt, spec, cont, vol, stor, tat, price, aoe) in COMMON:
        add(name, loinc, cpt, spec, cont, vol, stor, tat, price, aoe)
    for a in ALLERGENS:
        add("Allergen, %s IgE" % a, "", "86003", "SER", SST, "0.5 mL", "Refrigerated",
            rng.choice(["3 days", "5 days"]), money(rng.choice([9.5, 11.0, 12.75, 14.0])), [])
    for (name, cpt) in ANTIBODIES:
        add(name, "", cpt, "SER", SST, "1 mL", "Refrigerated", rng.choice(["2 days", "3 days", "5 days"]),
            money(rng.randint(18, 65) + rng.choice([0, 0.5, 0.25])), [PREG] if "IgG" in name and rng.random() < 0.3 else [])
    for d in DRUGS:
        add("%s, urine screen" % d, "", "80307", "UR", CUP, "30 mL", "Refrigerated", "2 days",
            money(rng.choice([15.0, 18.0, 22.5])), [])
        add("%s, confirmation (LC-MS/MS)" % d, "", "80368", "UR", CUP, "30 mL", "Refrigerated",
            rng.choice(["3 days", "5 days"]), money(rng.choice([45.0, 55.0, 65.0])), [DOSE])
    for d in DRUGS:
        add("%s, serum level" % d, "", "80375", "SER", "Red top (no gel)", "2 mL", "Frozen",
            rng.choice(["3 days", "5 days", "7 days"]), money(rng.choice([48.0, 62.5, 75.0])), [DOSE])
    for (name, cpt, spec, cont, aoe) in ELEMENTS:
        add(name, "", cpt, spec, cont, "2 mL", rng.choice(["Refrigerated", "Frozen"]),
            rng.choice(["5 days", "7 days", "14 days"]), money(rng.randint(30, 90)), aoe)
    # a few already-discontinued tests, with and without a replacement
    active_codes = [t["code"] for t in tests]
    for i, name in enumerate(["Bleeding time", "Thymol turbidity", "Creatine kinase MB (old method)",
                              "Amylase, urine (random)", "Sweat chloride (old method)", "T3 uptake"]):
        repl = rng.choice(active_codes[:60]) if i % 2 == 0 else ""
        add(name, "", "", "SER" if i % 3 else "WB", SST, "1 mL", "Refrigerated", "7 days", money(20 + i),
            [], status="discontinued", repl=repl)
    return tests


def make_panels(rng, tests):
    common = [t for t in tests[:len(COMMON)] if t["status"] == "active"]
    names = ["Annual physical", "Diabetes follow-up", "Thyroid check", "Prenatal panel", "Cardiac risk",
             "Anemia workup", "Renal follow-up", "Wellness basic", "Women's health", "Sports physical",
             "Pre-op labs", "Fatigue workup"]
    panels = []
    for i, name in enumerate(names):
        client = CLIENTS[i % len(CLIENTS)]
        comps = rng.sample(common, rng.randint(2, 5))
        price = sum(float(c["price"]) for c in comps) * 0.8
        panels.append({
            "code": "CP%03d" % (101 + i), "name": "%s - %s" % (name, PRACTICES[i % len(PRACTICES)]),
            "client_account": client, "price": money(round(price, 0)),
            "components": ";".join(c["code"] for c in comps),
        })
    return panels


def make_v2(rng, tests, panels):
    tests = [dict(t) for t in tests]
    panels = [dict(p) for p in panels]
    by_code = {t["code"]: t for t in tests}
    active = [t for t in tests if t["status"] == "active"]
    in_panels = {c for p in panels for c in p["components"].split(";")}
    last = max(int(t["code"]) for t in tests)
    # price changes
    for t in rng.sample(active, 12):
        t["price"] = money(float(t["price"]) * rng.choice([1.05, 1.1, 0.9]))
    # new tests, three of them replacements of tests discontinued now
    new = []
    for name, loinc, cpt, price in [
        ("Vitamin D, 25-hydroxy (LC-MS/MS)", "62292-8", "82306", "58.00"),
        ("Troponin I, high sensitivity", "89579-7", "84484", "49.00"),
        ("Hemoglobin A1c (HPLC)", "4548-4", "83036", "29.00"),
        ("Chlamydia and gonorrhea, NAA", "43304-5", "87491", "95.00"),
        ("Lyme disease, Western blot", "", "86617", "88.00"),
    ]:
        last += 13
        t = {"code": str(last), "name": name, "loinc": loinc, "cpt": cpt, "specimen": "SER", "container": SST,
             "volume": "1 mL", "storage": "Refrigerated", "turnaround": "2 days", "price": price,
             "status": "active", "effective_from": "2024-03-01", "replaced_by": "", "aoe": ""}
        if name.startswith("Chlamydia"):
            t.update(specimen="UR", container=CUP, volume="20 mL", aoe=aoe_cell([PREG]))
        if name.startswith("Hemoglobin"):
            t.update(specimen="WB", container=LAV, volume="2 mL")
        if name.startswith("Troponin"):
            t.update(specimen="PLAS", container=GREEN, turnaround="4 hours")
        new.append(t)
    tests.extend(new)
    for old_name, repl in [("Vitamin D, 25-hydroxy", new[0]), ("Troponin I", new[1]), ("Hemoglobin A1c", new[2])]:
        t = next(t for t in tests if t["name"] == old_name)
        t.update(status="discontinued", replaced_by=repl["code"], effective_from="2024-03-01")
    # a discontinued test without a replacement and outside every panel
    t = next(t for t in active if t["code"] not in in_panels and "Allergen" in t["name"])
    t.update(status="discontinued", effective_from="2024-03-01")
    # remove an already-discontinued test that nothing references any more
    referenced = {t["replaced_by"] for t in tests}
    gone = next(t for t in tests if t["status"] == "discontinued" and t["code"] not in referenced
                and t["code"] not in in_panels and t["effective_from"] < "2024")
    tests.remove(gone)
    # an AOE change: the source question gets one more answer
    for t in tests:
        t["aoe"] = t["aoe"].replace("list=THROAT|NASOPHARYNX|WOUND|URINE|SPUTUM",
                                    "list=THROAT|NASOPHARYNX|WOUND|URINE|SPUTUM|EYE")
    # a turnaround and container change
    by_code = {t["code"]: t for t in tests}
    t = next(t for t in tests if t["name"] == "Ferritin")
    t["turnaround"] = "2 days"
    # panels: a price change, a component change, a new one, a removed one
    panels[0]["price"] = money(float(panels[0]["price"]) + 5)
    comps = panels[1]["components"].split(";")
    extra = next(t["code"] for t in tests if t["name"] == "Magnesium")
    if extra not in comps:
        comps.append(extra)
    panels[1]["components"] = ";".join(comps)
    for p in panels:  # a panel of the replaced tests follows the replacement
        p["components"] = ";".join(
            by_code[c]["replaced_by"] if by_code[c]["status"] == "discontinued" and by_code[c]["replaced_by"] else c
            for c in p["components"].split(";"))
    panels.append({"code": "CP113", "name": "Lyme workup - Northwind Pediatrics", "client_account": "ACCT1002",
                   "price": "120.00", "components": ";".join([new[4]["code"], by_code[tests[45]["code"]]["code"]])})
    del panels[7]
    return tests, panels


def write_csv(path, header, rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    for r in sorted(rows, key=lambda r: r["code"]):
        w.writerow(r)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())


def valid_answer(item):
    code, _question, kind, _required = item.split(":")
    if kind.startswith("list="):
        return kind[len("list="):].split("|")[0]
    return {"yes_no": "Y", "number": "1500", "date": "20240101", "text": "unknown"}[kind]


def make_orders(tests, panels):
    """LabOrder JSON lines with the problems `validate` must report (field `expect`)."""
    by_name = {t["name"]: t for t in tests}
    by_code = {t["code"]: t for t in tests}
    glucose = by_name["Glucose"]
    strep = by_name["Throat culture, strep A"]
    vitd = by_name["Vitamin D, 25-hydroxy"]
    ua = by_name["Urinalysis, complete"]
    p = panels[0]
    panel_aoe = {}
    for c in p["components"].split(";"):
        for item in filter(None, by_code[c]["aoe"].split(";")):
            panel_aoe.setdefault(item.split(":")[0], valid_answer(item))
    panel_answers = [{"question_code": q, "answer": a} for q, a in sorted(panel_aoe.items())]
    orders = [
        {"expect": [],
         "order": {"message_control_id": "ORD0001", "placer_order_number": "PON0001", "client_account": p["client_account"],
                   "patient": {"family_name": "TESTPATIENT", "given_name": "ALPHA"},
                   "tests": [{"code": glucose["code"], "aoe": [{"question_code": "49541-6", "answer": "Y"}],
                              "specimen": {"type": "SER"}},
                             {"code": p["code"], "aoe": panel_answers}]}},
        {"expect": ["unknown_code", "discontinued", "missing_aoe", "answer_not_allowed", "specimen_mismatch",
                    "panel_not_owned"],
         "order": {"message_control_id": "ORD0002", "placer_order_number": "PON0002", "client_account": "ACCT9999",
                   "patient": {"family_name": "TESTPATIENT", "given_name": "BETA"},
                   "tests": [{"code": "999999"},
                             {"code": vitd["code"]},
                             {"code": glucose["code"]},
                             {"code": strep["code"], "aoe": [{"question_code": "SRC", "answer": "EAR"}]},
                             {"code": ua["code"], "specimen": {"type": "SER"}},
                             {"code": p["code"]}]}},
    ]
    return orders


def order_hl7(n, order, panel_code=None):
    """One OML^O21 (LOI) message of a LabOrder JSON as generated above."""
    o = order
    pid = "TP%04d" % n
    segs = ["MSH|^~\\&|CLINICEMR|CLINIC|LABBRIDGE|LAB|20240305093000-0500||OML^O21^OML_O21|%s|P|2.5.1|||AL|AL"
            % o["message_control_id"],
            "PID|1||%s^^^CLINICEMR^MR||%s^%s||19800101|F" % (pid, o["patient"]["family_name"], o["patient"]["given_name"]),
            "PV1|1|O"]
    for i, t in enumerate(o["tests"], 1):
        code = t["code"]
        if panel_code and code.startswith("CP"):
            code = panel_code
        segs.append("ORC|NW|%s|||||||20240305092500-0500|||1234567893^HOUSE^GREGORY" % o["placer_order_number"])
        segs.append("OBR|%d|%s||%s^^L|||20240305090000-0500|||||||||1234567893^HOUSE^GREGORY"
                    % (i, o["placer_order_number"], code))
        for k, a in enumerate(t.get("aoe", []), 1):
            segs.append("OBX|%d|ST|%s^^L||%s||||||O" % (k, a["question_code"], a["answer"]))
        if "specimen" in t:
            segs.append("SPM|1|||%s" % t["specimen"]["type"])
    return "\r".join(segs) + "\r"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "testdata", "compendium"))
    ap.add_argument("--seed", type=int, default=20240101)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    v1 = make_v1(rng)
    p1 = make_panels(rng, v1)
    v2, p2 = make_v2(rng, v1, p1)
    write_csv(os.path.join(args.out, "tests_v1.csv"), TEST_HEADER, v1)
    write_csv(os.path.join(args.out, "panels_v1.csv"), PANEL_HEADER, p1)
    write_csv(os.path.join(args.out, "tests_v2.csv"), TEST_HEADER, v2)
    write_csv(os.path.join(args.out, "panels_v2.csv"), PANEL_HEADER, p2)
    # Northwind maps the common tests and the panels of its clients to NW- codes.
    northwind = [(t["code"], "NW-" + t["code"]) for t in v2[:len(COMMON)]]
    northwind += [(p["code"], "NW" + p["code"]) for p in p2 if p["client_account"] in ("ACCT1002", "ACCT1004")]
    with open(os.path.join(args.out, "emr_northwind.csv"), "w", encoding="utf-8", newline="") as f:
        f.write("lab_code,emr_code\n" + "".join("%s,%s\n" % pair for pair in northwind))
    # Riverside numbers everything its own way: 7-digit codes.
    # It keeps the codes of removed tests and panels, so that their deletion goes out in its codes too.
    all_tests = sorted({t["code"] for t in v1 + v2})
    all_panels = sorted({p["code"] for p in p1 + p2})
    riverside = [{"lab_code": c, "emr_code": str(5000000 + i * 3)} for i, c in enumerate(all_tests)]
    riverside += [{"lab_code": c, "emr_code": "RS-PNL-%d" % i} for i, c in enumerate(all_panels)]
    with open(os.path.join(args.out, "emr_riverside.json"), "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join("  " + json.dumps(r) for r in riverside) + "\n]\n")
    orders = make_orders(v2, p2)
    with open(os.path.join(args.out, "orders.jsonl"), "w", encoding="utf-8") as f:
        for o in orders:
            f.write(json.dumps(o, sort_keys=True) + "\n")
    other = next(p["code"] for p in p2 if p["client_account"] != "ACCT1001")
    with open(os.path.join(args.out, "orders.hl7"), "w", encoding="utf-8", newline="") as f:
        f.write(order_hl7(1, orders[0]["order"]) + "\n" + order_hl7(2, orders[1]["order"], other) + "\n")


if __name__ == "__main__":
    main()
