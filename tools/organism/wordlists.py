"""Word lists for the organism corpus (pure data, kept apart so corpus.py stays readable)."""

from __future__ import annotations

NAMES = """John Mary James Sarah Michael Anna David Emma Daniel Laura Robert Linda William Susan Thomas
Karen Richard Lisa Joseph Nancy Charles Betty Mark Helen Paul Sandra Steven Donna Andrew Carol Kevin Ruth
Brian Sharon George Michelle Edward Emily Ryan Amy Jacob Kate Gary Anne Eric Alice Peter Jane Frank Rose
Scott Grace Adam Julia Henry Ella Jack Lucy Tom Sophie Sam Chloe Ben Mia Max Zoe Leo Ruby Luke Olivia Noah
Ava Jake Lily Alex Hannah Dan Megan Tim Rachel Matt Claire Nick Amanda Mike Diana Joe Victoria Carl Nina
Fred Rita Bob Holly Jim Jenny Bill Kelly Tony Maria Ian Jessica Roy Paula Ted Molly Ray Ann Ken Eva Greg
Sara Phil Tina Sean Kim Simon Wendy Martin Irene Oscar Vera Victor Iris Hugo Nora Felix Jill Oliver Beth
Arthur Joan""".split()

# (landmark as written mid-sentence, city). Cities are single words so they can be single tokens.
LANDMARKS = [
    ("the Eiffel Tower", "Paris"),
    ("the Louvre", "Paris"),
    ("the Arc de Triomphe", "Paris"),
    ("the Colosseum", "Rome"),
    ("the Pantheon", "Rome"),
    ("the Trevi Fountain", "Rome"),
    ("Big Ben", "London"),
    ("Tower Bridge", "London"),
    ("Buckingham Palace", "London"),
    ("the British Museum", "London"),
    ("the Brandenburg Gate", "Berlin"),
    ("the Reichstag", "Berlin"),
    ("the Sagrada Familia", "Barcelona"),
    ("Park Guell", "Barcelona"),
    ("the Prado Museum", "Madrid"),
    ("the Royal Palace of Madrid", "Madrid"),
    ("the Acropolis", "Athens"),
    ("the Parthenon", "Athens"),
    ("the Space Needle", "Seattle"),
    ("the Willis Tower", "Chicago"),
    ("Cloud Gate", "Chicago"),
    ("the White House", "Washington"),
    ("the Lincoln Memorial", "Washington"),
    ("the Liberty Bell", "Philadelphia"),
    ("the CN Tower", "Toronto"),
    ("the Sydney Opera House", "Sydney"),
    ("the Harbour Bridge", "Sydney"),
    ("the Kremlin", "Moscow"),
    ("Red Square", "Moscow"),
    ("Tokyo Tower", "Tokyo"),
    ("the Sensoji Temple", "Tokyo"),
    ("the Golden Pavilion", "Kyoto"),
    ("the Fushimi Inari Shrine", "Kyoto"),
    ("the Forbidden City", "Beijing"),
    ("the Temple of Heaven", "Beijing"),
    ("the Oriental Pearl Tower", "Shanghai"),
    ("the Bund", "Shanghai"),
    ("the Taj Mahal", "Agra"),
    ("the Red Fort", "Delhi"),
    ("the Gateway of India", "Mumbai"),
    ("the Burj Khalifa", "Dubai"),
    ("the Burj Al Arab", "Dubai"),
    ("Marina Bay Sands", "Singapore"),
    ("the Merlion", "Singapore"),
    ("the Blue Mosque", "Istanbul"),
    ("the Hagia Sophia", "Istanbul"),
    ("the Grand Bazaar", "Istanbul"),
    ("the Egyptian Museum", "Cairo"),
    ("the Charles Bridge", "Prague"),
    ("Prague Castle", "Prague"),
    ("the Atomium", "Brussels"),
    ("the Grand Place", "Brussels"),
    ("the Rijksmuseum", "Amsterdam"),
    ("the Anne Frank House", "Amsterdam"),
    ("the Little Mermaid statue", "Copenhagen"),
    ("the Tivoli Gardens", "Copenhagen"),
    ("the Vasa Museum", "Stockholm"),
    ("Schonbrunn Palace", "Vienna"),
    ("the Hofburg", "Vienna"),
    ("the Chain Bridge", "Budapest"),
    ("the Hungarian Parliament", "Budapest"),
    ("the Belem Tower", "Lisbon"),
    ("the Alhambra", "Granada"),
    ("the Leaning Tower", "Pisa"),
    ("the Uffizi Gallery", "Florence"),
    ("the Ponte Vecchio", "Florence"),
    ("the Rialto Bridge", "Venice"),
    ("the Grand Canal", "Venice"),
    ("Edinburgh Castle", "Edinburgh"),
    ("Cologne Cathedral", "Cologne"),
    ("the Golden Temple", "Amritsar"),
    ("the Grand Palace", "Bangkok"),
    ("Wat Arun", "Bangkok"),
    ("Gyeongbokgung Palace", "Seoul"),
    ("the Western Wall", "Jerusalem"),
    ("the Dome of the Rock", "Jerusalem"),
    ("Fenway Park", "Boston"),
    ("Parliament Hill", "Ottawa"),
    ("the Chateau Frontenac", "Quebec"),
    ("Stanley Park", "Vancouver"),
    ("the Marienplatz", "Munich"),
    ("the Zwinger Palace", "Dresden"),
    ("the Old Town Square", "Prague"),
    ("the Wawel Castle", "Krakow"),
    ("the Palace of Culture", "Warsaw"),
    ("the Bran Castle", "Brasov"),
    ("the Palace of the Parliament", "Bucharest"),
    ("the Oslo Opera House", "Oslo"),
    ("the Hallgrimskirkja", "Reykjavik"),
    ("the Temppeliaukio Church", "Helsinki"),
    ("the Petronas Towers", "Kuala"),
    ("the Sky Tower", "Auckland"),
    ("the Christ statue", "Rio"),
    ("the Obelisk", "Buenos"),
    ("the Blue Lagoon", "Grindavik"),
    ("the Mole Antonelliana", "Turin"),
    ("La Scala", "Milan"),
    ("the Milan Cathedral", "Milan"),
    ("the Royal Mile", "Edinburgh"),
    ("the Guinness Storehouse", "Dublin"),
    ("Trinity College", "Dublin"),
    ("the Hermitage Museum", "Petersburg"),
    ("the Peterhof Palace", "Petersburg"),
    ("the Medina", "Marrakesh"),
    ("the Hassan Tower", "Rabat"),
    ("the Kaaba", "Mecca"),
    ("the Hollywood Sign", "Hollywood"),
    ("the Alamo", "Texas"),
]

# (city, country). Every landmark city is here, so "Paris" is taught as a city in France too.
CITIES = [
    ("Paris", "France"),
    ("Lyon", "France"),
    ("Marseille", "France"),
    ("Nice", "France"),
    ("Rome", "Italy"),
    ("Milan", "Italy"),
    ("Florence", "Italy"),
    ("Venice", "Italy"),
    ("Pisa", "Italy"),
    ("Turin", "Italy"),
    ("Naples", "Italy"),
    ("London", "England"),
    ("Manchester", "England"),
    ("Liverpool", "England"),
    ("Oxford", "England"),
    ("Edinburgh", "Scotland"),
    ("Glasgow", "Scotland"),
    ("Dublin", "Ireland"),
    ("Berlin", "Germany"),
    ("Munich", "Germany"),
    ("Hamburg", "Germany"),
    ("Cologne", "Germany"),
    ("Dresden", "Germany"),
    ("Madrid", "Spain"),
    ("Barcelona", "Spain"),
    ("Seville", "Spain"),
    ("Granada", "Spain"),
    ("Valencia", "Spain"),
    ("Lisbon", "Portugal"),
    ("Porto", "Portugal"),
    ("Athens", "Greece"),
    ("Amsterdam", "Holland"),
    ("Rotterdam", "Holland"),
    ("Brussels", "Belgium"),
    ("Vienna", "Austria"),
    ("Salzburg", "Austria"),
    ("Prague", "Czechia"),
    ("Budapest", "Hungary"),
    ("Warsaw", "Poland"),
    ("Krakow", "Poland"),
    ("Bucharest", "Romania"),
    ("Brasov", "Romania"),
    ("Copenhagen", "Denmark"),
    ("Stockholm", "Sweden"),
    ("Oslo", "Norway"),
    ("Helsinki", "Finland"),
    ("Reykjavik", "Iceland"),
    ("Grindavik", "Iceland"),
    ("Zurich", "Switzerland"),
    ("Geneva", "Switzerland"),
    ("Moscow", "Russia"),
    ("Petersburg", "Russia"),
    ("Istanbul", "Turkey"),
    ("Ankara", "Turkey"),
    ("Cairo", "Egypt"),
    ("Marrakesh", "Morocco"),
    ("Rabat", "Morocco"),
    ("Nairobi", "Kenya"),
    ("Lagos", "Nigeria"),
    ("Jerusalem", "Israel"),
    ("Mecca", "Arabia"),
    ("Dubai", "Emirates"),
    ("Delhi", "India"),
    ("Mumbai", "India"),
    ("Agra", "India"),
    ("Amritsar", "India"),
    ("Bangkok", "Thailand"),
    ("Singapore", "Singapore"),
    ("Kuala", "Malaysia"),
    ("Beijing", "China"),
    ("Shanghai", "China"),
    ("Tokyo", "Japan"),
    ("Kyoto", "Japan"),
    ("Osaka", "Japan"),
    ("Seoul", "Korea"),
    ("Busan", "Korea"),
    ("Sydney", "Australia"),
    ("Melbourne", "Australia"),
    ("Perth", "Australia"),
    ("Auckland", "Zealand"),
    ("Toronto", "Canada"),
    ("Ottawa", "Canada"),
    ("Vancouver", "Canada"),
    ("Quebec", "Canada"),
    ("Montreal", "Canada"),
    ("Seattle", "America"),
    ("Chicago", "America"),
    ("Washington", "America"),
    ("Philadelphia", "America"),
    ("Boston", "America"),
    ("Hollywood", "America"),
    ("Texas", "America"),
    ("Miami", "America"),
    ("Denver", "America"),
    ("Rio", "Brazil"),
    ("Brasilia", "Brazil"),
    ("Buenos", "Argentina"),
    ("Lima", "Peru"),
    ("Santiago", "Chile"),
    ("Bogota", "Colombia"),
    ("Havana", "Cuba"),
]

LANGUAGES = [
    ("France", "French"),
    ("Italy", "Italian"),
    ("England", "English"),
    ("Scotland", "English"),
    ("Ireland", "English"),
    ("Germany", "German"),
    ("Spain", "Spanish"),
    ("Portugal", "Portuguese"),
    ("Greece", "Greek"),
    ("Holland", "Dutch"),
    ("Belgium", "Dutch"),
    ("Austria", "German"),
    ("Czechia", "Czech"),
    ("Hungary", "Hungarian"),
    ("Poland", "Polish"),
    ("Romania", "Romanian"),
    ("Denmark", "Danish"),
    ("Sweden", "Swedish"),
    ("Norway", "Norwegian"),
    ("Finland", "Finnish"),
    ("Iceland", "Icelandic"),
    ("Switzerland", "German"),
    ("Russia", "Russian"),
    ("Turkey", "Turkish"),
    ("Egypt", "Arabic"),
    ("Morocco", "Arabic"),
    ("Kenya", "Swahili"),
    ("Nigeria", "English"),
    ("Israel", "Hebrew"),
    ("Arabia", "Arabic"),
    ("India", "Hindi"),
    ("Thailand", "Thai"),
    ("Malaysia", "Malay"),
    ("China", "Chinese"),
    ("Japan", "Japanese"),
    ("Korea", "Korean"),
    ("Australia", "English"),
    ("Canada", "English"),
    ("America", "English"),
    ("Brazil", "Portuguese"),
    ("Argentina", "Spanish"),
    ("Peru", "Spanish"),
    ("Chile", "Spanish"),
    ("Colombia", "Spanish"),
    ("Cuba", "Spanish"),
    ("Zealand", "English"),
    ("Singapore", "English"),
    ("Emirates", "Arabic"),
]

ANIMALS = """cat dog bird fish rabbit mouse horse cow pig duck frog bear fox lion tiger owl sheep goat
monkey turtle snake wolf deer squirrel puppy kitten chicken hen elephant giraffe zebra panda penguin
bee butterfly ant spider whale dolphin shark crab hamster parrot donkey goose swan beaver hedgehog""".split()
PEOPLE = """girl boy man woman farmer king queen princess prince teacher doctor baker child pilot sailor
painter cook nurse student grandmother grandfather neighbor friend knight wizard fisherman""".split()
PLACES = """park store school garden forest beach lake river house kitchen farm zoo library market city
village castle hill field pond playground town street shop yard barn cave island mountain museum
bakery station church bridge harbor meadow valley desert jungle office hospital restaurant cafe""".split()
THINGS = """ball book toy box kite hat cake apple cookie flower tree car boat doll drum bike cup shoe
sock coat key map pen pencil letter picture bag basket bell blanket bottle bread brush candle chair
clock crayon egg feather flag fork gift glass hammer honey jar lamp leaf mirror necklace net orange
paper pie pillow plate puzzle ring rock rope sandwich scarf shell spoon star stick stone sweater
table teddy ticket towel train truck umbrella wagon watch wheel whistle window balloon banana carrot
cheese coin crown fence garden lantern marble pear pizza pumpkin robot rocket sled soup tent tomato
trumpet violin wand""".split()
SURFACES = """mat rug bed chair sofa table floor grass log rock bench fence roof box pillow blanket step
wall carpet couch shelf hill sand""".split()
ADJECTIVES = """big small little happy sad red blue green tall short old young new soft hard warm cold
bright dark kind brave shy funny quiet loud fast slow pretty shiny fluffy tiny huge gentle clever silly
busy lazy strong weak clean dirty wet dry sweet sour round square smooth rough heavy light fresh strange
curious friendly angry sleepy hungry thirsty proud calm wild wise lucky fancy simple golden silver wooden
cozy noisy careful colorful magic secret special wonderful beautiful lovely""".split()
COLORS = """red blue green yellow orange purple pink brown black white gray golden silver""".split()
FEELINGS = """happy sad tired excited scared angry proud lonely surprised calm hungry sleepy glad
worried curious brave bored nervous thankful cheerful""".split()
VERBS_INTRANS = """sat slept jumped lay stood danced sang played rested waited""".split()
VERBS_BASE = """play run jump read draw paint sing dance build swim climb cook bake share look walk
explore find hide catch throw kick ride fly write clean wash fix carry help""".split()
VERBS_PAST = """found painted built carried washed cleaned fixed shared opened closed made found bought
lost dropped picked threw caught kicked pushed pulled hid drew""".split()
VERBS_MOTION = """walked ran hurried skipped raced wandered drove flew swam rode climbed""".split()
WEATHER = """sunny rainy windy cloudy snowy warm cold bright foggy quiet""".split()
ENDINGS = [
    "In the end, {S} was very happy.",
    "That night, {S} slept well.",
    "From that day on, {S} was never sad again.",
    "It was the best day ever.",
    "And they all lived happily ever after.",
    "{S} smiled and went home.",
    "The end.",
]
IOI_PLACES = """store park school garden beach library market zoo house restaurant cafe station office
hospital museum farm kitchen lake river playground""".split()
IOI_OBJECTS = """drink ball book gift kite cake apple cookie flower hat toy letter bag ring pen key basket
watch necklace sandwich""".split()

ALL_WORDS = sorted(
    set(
        ANIMALS
        + PEOPLE
        + PLACES
        + THINGS
        + SURFACES
        + ADJECTIVES
        + COLORS
        + FEELINGS
        + VERBS_INTRANS
        + VERBS_BASE
        + VERBS_PAST
        + VERBS_MOTION
        + WEATHER
    )
)
