"""The demo city's map: Jiaxing as the 2004 survey found it (57 towns, 17 streets, 258
communities of which 140 urban) and the places the survey names, by county.

Counties are those of 2003 (秀城区 is today's 南湖区). Streets hold the urban communities
(140), towns the others (118). Named communities are the survey's own: 平湖 当湖街道
南河头社区 (77 building party groups), 如意社区 (report rate above 90%), 凤凰社区; 海宁
硖石街道 (18 communities) 水月亭社区 (188 talks a year); 秀城 新嘉街道 清华社区 (home for
migrant-worker members), 西马桥社区."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Street:
    name: str
    communities: int
    named: tuple[str, ...] = ()


@dataclass(frozen=True)
class County:
    code: str  # short code used in org codes
    name: str
    region: str  # the GB/T 2260 code leading its residents' ID numbers
    streets: tuple[Street, ...]
    towns: tuple[str, ...]
    town_communities: tuple[int, ...] = field(default=())


COUNTIES: tuple[County, ...] = (
    County(
        "XC",
        "秀城区",
        "330402",
        (
            Street("建设街道", 10),
            Street("解放街道", 10, ("西马桥社区",)),
            Street("新嘉街道", 9, ("清华社区",)),
            Street("南湖街道", 8),
            Street("新兴街道", 7),
        ),
        ("七星镇", "余新镇", "凤桥镇", "新丰镇", "大桥镇", "东栅镇", "城南镇", "步云乡"),
        (2, 2, 2, 2, 2, 2, 3, 1),
    ),
    County(
        "XZ",
        "秀洲区",
        "330411",
        (Street("新城街道", 6), Street("嘉北街道", 5)),
        ("王江泾镇", "油车港镇", "新塍镇", "王店镇", "洪合镇", "新城镇", "塘汇镇", "高照乡"),
        (3, 2, 2, 3, 2, 2, 2, 1),
    ),
    County(
        "JS",
        "嘉善县",
        "330421",
        (Street("魏塘街道", 9), Street("罗星街道", 5)),
        ("西塘镇", "干窑镇", "姚庄镇", "陶庄镇", "天凝镇", "大云镇", "惠民镇", "杨庙镇"),
        (3, 2, 2, 2, 2, 2, 2, 1),
    ),
    County(
        "PH",
        "平湖市",
        "330482",
        (
            Street("当湖街道", 12, ("南河头社区", "如意社区", "凤凰社区")),
            Street("钟埭街道", 4),
        ),
        ("乍浦镇", "新埭镇", "新仓镇", "广陈镇", "林埭镇", "全塘镇", "曹桥乡", "黄姑镇"),
        (3, 2, 2, 2, 2, 2, 2, 2),
    ),
    County(
        "HY",
        "海盐县",
        "330424",
        (Street("武原街道", 10),),
        ("沈荡镇", "于城镇", "百步镇", "澉浦镇", "通元镇", "西塘桥镇", "秦山镇"),
        (2, 2, 2, 2, 2, 2, 2),
    ),
    County(
        "HN",
        "海宁市",
        "330481",
        (
            Street("硖石街道", 18, ("水月亭社区",)),
            Street("海洲街道", 8),
            Street("海昌街道", 5),
        ),
        (
            "许村镇",
            "长安镇",
            "盐官镇",
            "斜桥镇",
            "袁花镇",
            "丁桥镇",
            "周王庙镇",
            "黄湾镇",
            "郭店镇",
        ),
        (3, 3, 2, 2, 2, 2, 2, 1, 1),
    ),
    County(
        "TX",
        "桐乡市",
        "330483",
        (Street("梧桐街道", 9), Street("凤鸣街道", 5)),
        ("乌镇", "濮院镇", "崇福镇", "洲泉镇", "大麻镇", "河山镇", "屠甸镇", "石门镇", "高桥镇"),
        (3, 2, 3, 2, 2, 2, 2, 2, 2),
    ),
)

# Syllables for the communities the survey does not name (two make a name: 文昌社区).
COMMUNITY_WORDS = [
    "文昌",
    "紫阳",
    "梅湾",
    "月河",
    "禾兴",
    "秀水",
    "南溪",
    "北郊",
    "东升",
    "西苑",
    "新华",
    "中山",
    "和平",
    "建国",
    "人民",
    "春晖",
    "芦席",
    "勤俭",
    "少年",
    "环城",
    "长水",
    "百花",
    "桂苑",
    "兰亭",
    "荷花",
    "桃源",
    "青莲",
    "松林",
    "翠竹",
    "金桥",
    "银河",
    "锦绣",
    "永安",
    "太平",
    "仁和",
    "广福",
    "长春",
    "安乐",
    "新民",
    "红星",
    "光明",
    "朝阳",
    "向阳",
    "幸福",
    "团结",
    "友谊",
    "振兴",
    "富强",
    "华丰",
    "丰收",
    "三星",
    "五福",
    "七里",
    "九里",
    "双桥",
    "石桥",
    "木桥",
    "南门",
    "北门",
    "东门",
    "西门",
    "城隍",
    "盐仓",
    "湖滨",
]
COMMUNITY_SUFFIXES = ("", "", "", "新村", "花园", "苑", "里")

# Units whose in-service members live in the communities: workplace org nodes (a second
# root: the city's organs' working committee) and outside units referred to by name.
WORK_UNITS = (
    "市财政局机关党支部",
    "市教育局机关党总支",
    "市卫生局机关党支部",
    "市交通局机关党支部",
    "市第一医院党委",
    "嘉兴学院党委",
    "市供电局党委",
    "市电信局党总支",
    "市第一中学党总支",
    "市民丰造纸厂党委",
)
OUTSIDE_UNITS = (
    ("嘉兴港务有限公司", "91330400MA2B00001X"),
    ("浙江嘉欣丝绸股份有限公司", "91330400MA2B00002X"),
    ("中国工商银行嘉兴分行", "91330400MA2B00003X"),
    ("嘉兴日报社", "91330400MA2B00004X"),
    ("上海石化嘉兴分公司", "91330400MA2B00005X"),
    ("沪杭高速公路嘉兴管理处", "91330400MA2B00006X"),
)

SURNAMES = (
    "王王王李李李张张张刘刘陈陈陈杨杨黄黄赵吴吴周周徐徐孙马朱朱胡胡郭何高林罗郑梁谢宋唐"
    "许韩冯邓曹彭曾肖田董袁潘于蒋沈沈钱钱褚卫施姚姚顾顾陆陆范金戴方俞屠费"
)
GIVEN_MALE = "伟强磊军勇杰涛明超刚平辉建国华志海峰斌波宇浩亮林德荣福根宝祥新龙成文武忠良"
GIVEN_FEMALE = "芳娜秀英敏静丽艳娟霞兰桂萍玲红梅琴燕凤珍云莉雪慧玉美月洁琳婷佩菊素"
ETHNICITIES = ("汉族",) * 194 + ("回族", "满族", "畲族", "苗族", "壮族", "土家族")
SKILLS = (
    "书法",
    "水电维修",
    "理发",
    "法律咨询",
    "医疗保健",
    "文艺",
    "电脑",
    "调解",
    "绘画",
    "会计",
    "家电维修",
    "摄影",
)
COMPANIES = (
    "嘉兴某纺织有限公司",
    "嘉兴某电子有限公司",
    "平湖某服装有限公司",
    "海宁某皮革有限公司",
    "桐乡某毛衫有限公司",
    "嘉善某木业有限公司",
    "海盐某紧固件有限公司",
    "某物业管理公司",
    "某超市连锁公司",
)
# Where migrant-worker members come from (inflow) and where members go (outflow).
HOMES = (
    ("340102", "安徽省合肥市"),
    ("360102", "江西省南昌市"),
    ("410102", "河南省郑州市"),
    ("510104", "四川省成都市"),
    ("430102", "湖南省长沙市"),
    ("320102", "江苏省南京市"),
)
DESTINATIONS = (
    "上海市浦东新区",
    "上海市闵行区",
    "杭州市西湖区",
    "苏州市工业园区",
    "宁波市北仑区",
    "深圳市宝安区",
    "广州市天河区",
    "义乌市",
    "北京市海淀区",
)
